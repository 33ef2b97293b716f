"""``probe``: linear probes on the encoder's pooled features, against the paper's read-out."""

from __future__ import annotations

import numpy as np

from train.diagnose.readout import PAPER_READOUT, against_the_paper, format_readouts
from train.evaluate import ManifestFrames


def pooled_features(model, data: ManifestFrames, batch_size: int = 32) -> dict:
    """Per face (the exact network, fp32), each channel's mean, standard deviation and maximum over the grid: of the
    latent's absolute value ("latent", N x 3C, the means first, so the paper's evidence is a linear function of them)
    and, when the encoder has a timm backbone with ``blocks``, of every stage's output ("stages"); with "evidence"
    (the paper's: the fake half's mean minus the real half's), "label" (1 = real), "family", "area"."""
    import torch

    from mtl.model import half_activations

    def stats(t):
        t = t.float().flatten(2)
        return torch.cat([t.mean(2), t.std(2), t.amax(2)], 1)

    outputs = {}
    blocks = getattr(getattr(model.encoder, "backbone", None), "blocks", None)
    hooks = [] if blocks is None else [
        block.register_forward_hook(lambda mod, inp, out, i=i: outputs.__setitem__(i, out)) for i, block in
        enumerate(blocks)]
    out = {k: [] for k in ("latent", "stages", "evidence", "label", "family", "area")}
    model.eval()
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    try:
        with torch.inference_mode():
            for batch in loader:
                latent = model.encoder(model.encoder_input(batch["image"].float())).abs()
                out["latent"].append(stats(latent).numpy())
                halves = half_activations(latent)
                out["evidence"].append((halves[:, 0] - halves[:, 1]).numpy())
                if outputs:
                    out["stages"].append(torch.cat([stats(outputs[i]) for i in sorted(outputs)], 1).numpy())
                out["label"].append(batch["label"].reshape(-1).numpy())
                out["family"].extend(batch["family"])
                out["area"].append(batch["mask"].float().mean(dim=(1, 2)).numpy())
    finally:
        for h in hooks:
            h.remove()
    return {k: np.asarray(v) if k == "family" else np.concatenate(v) for k, v in out.items() if len(v)}


def same_crops(a: ManifestFrames, b: ManifestFrames) -> bool:
    """Whether two views hold the same crops in the same order (the features of one then serve both)."""
    return a.root.resolve() == b.root.resolve() and [r["image"] for r in a.rows] == [r["image"] for r in b.rows]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2):
    """A logistic regression of ``y`` (1 = fake) on standardised ``x`` (L2 penalty ``l2`` on the weights, L-BFGS in
    float64); returns the function that gives new rows' logits."""
    import torch

    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w[:-1] + w[-1], yt)
        value = value + l2 * w[:-1].square().sum()
        value.backward()
        return value

    opt.step(loss)
    weights = w.detach().numpy()
    return lambda rows: ((rows - mu) / sd) @ weights[:-1] + weights[-1]


def probes(model, fit_data: ManifestFrames, data: ManifestFrames, l2: float = 1e-2, n_boot: int = 1000) -> dict:
    """Linear probes fitted on ``fit_data`` (real against every family) to the latent's and the stages' pooled
    statistics (``pooled_features``), scored on ``data`` beside the paper's read-out (``against_the_paper``)."""
    fit = pooled_features(model, fit_data)
    f = fit if same_crops(fit_data, data) else pooled_features(model, data)  # fitted on the split it scores
    sets = {"latent": ["latent"]} | ({"stages": ["stages"], "stages and latent": ["stages", "latent"]}
                                     if "stages" in f else {})
    scores = {PAPER_READOUT: f["evidence"]}
    for name, keys in sets.items():
        probe = fit_logistic(np.hstack([fit[k] for k in keys]), (fit["label"] == 0).astype(float), l2)
        scores[f"probe: {name}"] = probe(np.hstack([f[k] for k in keys]))
    people = np.array([r.get("person", "") for r in data.rows])
    table = against_the_paper(scores, f["label"] == 0, f["family"], f["area"], people, n_boot)
    return {"crops": len(data), "fit_crops": len(fit_data), "features": {k: int(f[k].shape[1]) for k in
            ("latent", "stages") if k in f}, "l2": l2, **table}


def format_probes(r: dict) -> str:
    head = (f"probes fitted on {r['fit_crops']} crops (L2 {r['l2']:g}; features: "
            + ", ".join(f"{k} {n}" for k, n in r["features"].items()) + "), scored on:")
    return head + "\n" + format_readouts(r)
