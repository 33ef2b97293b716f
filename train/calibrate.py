"""Fit a checkpoint's probability calibration and decision threshold on a validation split.

    python -m train.calibrate --data ROOT --split val --model DIR [--target-fpr 0.01] [--out DIR]

The network's raw score is the margin ``a_fake - a_real`` between the mean activations of the latent's two halves.
The paper turns it into a probability with a softmax over the two activations, i.e. ``sigmoid(margin)``, which
squeezes everything into about 0.27-0.73 and is not a frequency of anything. Here:

1. **Platt scaling**: ``p_fake = sigmoid(scale * margin + bias)``, a logistic regression of "is fake" on the margin
   fitted by Newton's method (log loss plus a small L2 penalty on the standardised slope, which keeps the fit finite
   when the validation set is perfectly separated). ``p_fake`` then reads as "the fraction of validation faces
   with this margin that were fakes" (at the validation split's real/fake mix).
2. **The decision threshold** is chosen on the validation *reals*: the smallest threshold at which at most
   ``target_fpr`` of them are judged fake (``p_fake > threshold``). The default 0.01 means: on faces like the real
   validation faces, about 1 in 100 is flagged. That is the cost users meet most (a real photo called fake); the
   share of fakes caught at it (TPR) is reported alongside. It is a frequency on the validation distribution, not a
   guarantee on other cameras, compressions or people; measure the FPR on your own real images
   (``python -m train.evaluate --images``). A small target rests on few faces (0.3% of 919 reals is 2 of them),
   so the report also gives the exact binomial 95% interval of the FPR that those counts allow.

An ensemble (``mtl.ensemble``) is calibrated the same way on its own statistic, the mean of its members'
log-odds, in place of the margin; its members keep theirs.

The calibration and threshold are written into the checkpoint's ``config.json`` (``calibration_scale``,
``calibration_bias``, ``threshold``), and a ``calibration.json`` report next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from mtl.allocator import keep_freed_memory

from . import metrics as M


def _probabilities(activations, scale: float, bias: float) -> np.ndarray:
    """p_fake exactly as ``ClassNSeg.calibrate`` (from (N, 2) activations) or ``Ensemble.calibrate_margin`` (from (N,)
    margins) computes it (float32 torch), so thresholds agree bit for bit."""
    a = torch.as_tensor(np.asarray(activations), dtype=torch.float32)
    margin = a[:, 0] - a[:, 1] if a.ndim == 2 else a
    return torch.sigmoid(float(scale) * margin + float(bias)).numpy().astype(np.float64)


def platt_fit(margin, y_fake, l2: float = 1e-3, max_iter: int = 200, tol: float = 1e-10) -> tuple[float, float, dict]:
    """Logistic regression ``P(fake) = sigmoid(scale * margin + bias)`` by damped Newton's method.

    The margin is standardised for the fit (the penalty ``0.5 * l2 * w**2`` acts on the standardised slope ``w``,
    the intercept is not penalised), then the coefficients are mapped back. Returns (scale, bias, info).
    """
    m = np.asarray(margin, dtype=np.float64).reshape(-1)
    y = np.asarray(y_fake, dtype=np.float64).reshape(-1)
    mu, sd = m.mean(), m.std()
    sd = max(sd, 1e-4)  # near-constant margins (an untrained net): a huge slope would only fit float32 noise
    x = np.stack([(m - mu) / sd, np.ones_like(m)], axis=1)  # N x 2
    reg = np.array([l2, 0.0])

    def loss(theta):
        z = x @ theta
        return np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * theta[0] ** 2

    prior = np.clip(y.mean(), 1e-6, 1 - 1e-6)
    theta = np.array([0.0, np.log(prior / (1 - prior))])
    f = loss(theta)
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (p - y) / len(y) + reg * theta
        hess = (x * (p * (1 - p))[:, None]).T @ x / len(y) + np.diag(reg + 1e-12)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:  # backtracking: Newton steps can overshoot when the classes are (nearly) separable
            new = theta - t * step
            f_new = loss(new)
            if f_new <= f + 1e-4 * t * -(grad @ step) or t < 1e-8:
                break
            t *= 0.5
        theta, f_prev, f = new, f, f_new
        if abs(f_prev - f) < tol and np.abs(grad).max() < 1e-6:
            converged = True
            break
    w, b = theta
    scale, bias = w / sd, b - w * mu / sd
    return float(scale), float(bias), {"iterations": it, "converged": converged, "log_loss": float(f)}


def _quality(y_fake, p, threshold: float) -> dict:
    reals = np.asarray(p)[np.asarray(y_fake) == 0]
    flagged = int((reals > threshold).sum())
    return {
        "reals_flagged": flagged,
        "fpr_interval": list(M.binomial_interval(flagged, len(reals))),
        "brier": M.brier_score(y_fake, p),
        "ece": M.expected_calibration_error(y_fake, p, n_bins=10),
        "threshold": float(threshold),
        "fpr": M.fpr_at_threshold(y_fake, p, threshold),
        "tpr": M.tpr_at_threshold(y_fake, p, threshold),
        "acc": M.accuracy(y_fake, (p > threshold).astype(np.int64)),
        "auc": M.roc_auc(y_fake, p),
        "p_range": [float(p.min()), float(p.max())],
    }


def fit_calibration(activations, labels, target_fpr: float = 0.01, l2: float = 1e-3,
                    current: tuple[float, float, float] = (1.0, 0.0, 0.5)) -> tuple[float, float, float, dict]:
    """(scale, bias, threshold, report) from validation activations (N, 2: fake half, real half), or the (N,) margins
    an ensemble scores by (the mean of its members' log-odds), and labels (N, 1 = real, as the paper).

    ``threshold`` is the smallest at which at most ``target_fpr`` of the validation reals are judged fake.
    ``current`` is the model's present (scale, bias, threshold), for the report's "before".
    """
    a = np.asarray(activations, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if not (a.ndim == 2 and a.shape[1] == 2 or a.ndim == 1) or len(a) != len(labels):
        raise ValueError(f"expected activations (N, 2) or margins (N,) and labels (N,), got {a.shape} and "
                         f"{labels.shape}")
    y_fake = (labels == 0).astype(np.int64)
    if y_fake.sum() == 0 or y_fake.sum() == len(y_fake):
        raise ValueError("calibration needs both real and fake faces")
    margin = np.asarray(a[:, 0] - a[:, 1]) if a.ndim == 2 else a
    scale, bias, info = platt_fit(margin, y_fake, l2=l2)
    p = _probabilities(a, scale, bias)
    threshold = M.threshold_for_fpr(p[y_fake == 0], target_fpr)
    p_before = _probabilities(a, current[0], current[1])
    report = {
        "n": int(len(labels)), "n_real": int((y_fake == 0).sum()), "n_fake": int(y_fake.sum()),
        "target_fpr": float(target_fpr), "l2": float(l2),
        "scale": scale, "bias": bias, "threshold": threshold, "fit": info,
        "before": {"scale": float(current[0]), "bias": float(current[1]), **_quality(y_fake, p_before, current[2])},
        "after": {"scale": scale, "bias": bias, **_quality(y_fake, p, threshold)},
    }
    if scale <= 0:
        report["warning"] = ("the fitted scale is not positive: on this split the fake half's activation does not "
                             "rise with fakeness; the model is not usable as a detector here")
    return scale, bias, threshold, report


def format_report(report: dict) -> str:
    rows = [("scale", "scale", "{:.4g}"), ("bias", "bias", "{:.4g}"), ("threshold", "threshold", "{:.4g}"),
            ("Brier", "brier", "{:.4f}"), ("ECE (10 bins)", "ece", "{:.4f}"), ("FPR at threshold", "fpr", "{:.2%}"),
            ("TPR at threshold", "tpr", "{:.2%}"), ("accuracy", "acc", "{:.2%}"), ("AUC", "auc", "{:.4f}")]
    b, a = report["before"], report["after"]
    out = [f"{report['n']} faces ({report['n_real']} real, {report['n_fake']} fake); "
           f"target FPR {report['target_fpr']:.2%}",
           f"{'':18s}{'before':>12s}{'after':>12s}"]
    for name, key, fmt in rows:
        out.append(f"{name:18s}{fmt.format(b[key]):>12s}{fmt.format(a[key]):>12s}")
    lo, hi = a["fpr_interval"]
    out.append(f"at the new threshold {a['reals_flagged']} of {report['n_real']} validation reals are flagged; "
               f"the FPR these counts allow (95%, exact binomial): {lo:.2%} to {hi:.2%}")
    out.append(f"p_fake range      [{b['p_range'][0]:.3f}, {b['p_range'][1]:.3f}]  ->  "
               f"[{a['p_range'][0]:.3f}, {a['p_range'][1]:.3f}]")
    if "warning" in report:
        out.append("WARNING: " + report["warning"])
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="dataset root holding manifest.csv")
    p.add_argument("--split", default="val")
    p.add_argument("--model", required=True, help="checkpoint directory to calibrate")
    p.add_argument("--target-fpr", type=float, default=0.01)
    p.add_argument("--l2", type=float, default=1e-3)
    p.add_argument("--out", type=Path, help="where to write the calibrated checkpoint (default: in place)")
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="fp32", choices=("fp32", "auto", "bf16"))
    p.add_argument("--test-time-flip", action=argparse.BooleanOptionalAction, default=None,
                   help="score each face and its mirror image and average them, fitting the calibration that way and "
                        "storing the setting in the checkpoint (default: keep the checkpoint's setting)")
    args = p.parse_args(argv)
    keep_freed_memory()  # each batch's buffers reused by the next (mtl/allocator.py)

    from mtl import load_model

    from .evaluate import collect, open_split

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    model = load_model(args.model)
    ensemble = hasattr(model, "members")
    if args.test_time_flip is not None:
        if ensemble:
            p.error("--test-time-flip: this checkpoint is an ensemble; set it on its members before joining them")
        model.test_time_flip = args.test_time_flip
    data = open_split(args.data, args.split, args.limit, args.seed)
    s = collect(model, data, precision=args.precision, batch_size=args.batch_size)
    scale, bias, threshold, report = fit_calibration(  # margin: a_fake - a_real, or an ensemble's mean log-odds
        s["margin"], s["label"], args.target_fpr, args.l2,
        current=(model.calibration_scale, model.calibration_bias, model.threshold))
    report.update({"data": str(args.data), "split": args.split, "limit": args.limit, "precision": args.precision,
                   "test_time_flip": model.test_time_flip})
    print(format_report(report))
    out = args.out or Path(args.model)
    model.set_calibration(scale, bias, threshold)
    model.save_pretrained(out)
    (Path(out) / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}/config.json (calibration_scale={scale:.6g}, calibration_bias={bias:.6g}, "
          f"threshold={threshold:.6g}) and {out}/calibration.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
