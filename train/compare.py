"""Paired comparison of checkpoints scored on the same images: is one AUC really higher than the other?

    python -m train.evaluate --data ROOT --split test --model A --model B --scores scores.csv
    python -m train.compare scores.csv                  # every other model against the first column
    python -m train.compare scores.csv --base A --model B [--boot 2000] [--json out.json]
    python -m train.compare a.csv b.csv                 # models scored in separate runs, joined by image
    python -m train.compare a.csv packed.csv --by stem  # ... or by file name: a build against its train.pack copy
    python -m train.compare a.csv b.csv --base A --mean A+B   # ... and the two models' ensemble (mean log-odds)
    python -m train.evaluate --videos DIR --model A --model B --json videos.json
    python -m train.compare --videos videos.json        # real clip frames flagged, pairwise (several files join)
    python -m train.compare --videos videos.json --matched val.csv   # ... and at matched detection rates

Two checkpoints from one training run score the same faces in much the same order, so the difference of their
AUCs is far less noisy than either AUC alone (the unpaired standard error of one family's AUC, e.g. Hanley and
McNeil's, overstates it). For the whole split and for each family (its fakes against all the reals, as in
``train.evaluate``) this prints both AUCs, their difference (model minus base) and two 95% intervals for it:

* **DeLong**: DeLong, DeLong and Clarke-Pearson (1988), the paired test on the two AUCs' structural components
  (computed from mid-ranks as in Sun and Xu, 2014), with its two-sided p-value. It treats every image as
  independent.
* **by person**: a percentile bootstrap that resamples whole people (the ``person`` column), because a person's
  real photo and the forgeries made from it are not independent. This is the one to trust when they differ.

With ``--videos`` it reads ``train.evaluate --videos`` JSON instead (the same frames scored by each model) and
compares the share of real clip frames each model flags at its own threshold: the frames only one of them flags,
and a bootstrap interval for the difference that resamples whole clips. Two models' own thresholds may catch
different shares of fakes, so ``--matched SCORES.csv`` (the same models scored on a split, e.g. validation) also
gives, for each model, the clip frames and the split's reals it flags at the thresholds where it catches given
shares of that split's fakes (``--tpr``).

``--mean A+B`` adds a column scoring each image by the mean of models A's and B's log-odds of fake (their
calibrated ``p_fake``), compared like any other: whether two checkpoints together rank the faces better than
either, before anyone builds an ensemble to serve. Models that miss the same faces gain little from it.

The scores CSV (``train.evaluate --scores``) holds ``image, person, family, label`` (label 1 = real, the paper's
class index) and one ``p_fake`` column per model.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path, PurePosixPath

import numpy as np

from .metrics import _average_ranks

META_COLUMNS = ("image", "person", "family", "label")


# --- statistics ----------------------------------------------------------------------------------------------------
def _normal_two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def delong_test(y_true_fake, score_a, score_b, level: float = 0.95) -> dict:
    """DeLong's paired test of AUC(b) - AUC(a) on the same images (fake = positive class, larger = more fake).

    Returns auc_a, auc_b, diff (b - a), se, ci (normal, ``level``), z and p (two-sided). With a standard error of
    0 (e.g. identical scores) p is 1 when the difference is 0.
    """
    from scipy.stats import norm

    y = np.asarray(y_true_fake).reshape(-1).astype(bool)
    scores = np.stack([np.asarray(score_a, np.float64).reshape(-1), np.asarray(score_b, np.float64).reshape(-1)])
    if scores.shape[1] != len(y):
        raise ValueError(f"{len(y)} labels but {scores.shape[1]} scores")
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError("need both fakes and reals")
    v10 = np.empty((2, m))  # per fake: share of reals it outranks (ties count half)
    v01 = np.empty((2, n))  # per real: share of fakes that outrank it
    for k in range(2):
        r_all = _average_ranks(scores[k])
        r_pos = _average_ranks(scores[k][y])
        r_neg = _average_ranks(scores[k][~y])
        v10[k] = (r_all[y] - r_pos) / n
        v01[k] = 1.0 - (r_all[~y] - r_neg) / m
    auc = v10.mean(axis=1)
    s10 = np.cov(v10) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(v01) if n > 1 else np.zeros((2, 2))
    c = np.array([-1.0, 1.0])
    var = float(c @ (s10 / m + s01 / n) @ c)
    se = math.sqrt(max(var, 0.0))
    diff = float(auc[1] - auc[0])
    half = float(norm.ppf(0.5 + level / 2)) * se
    if se > 0:
        z = diff / se
        p = _normal_two_sided_p(z)
    else:
        z, p = (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "diff": diff, "se": se,
            "ci": (diff - half, diff + half), "z": float(z), "p": float(p)}


def weighted_auc(y_true_fake, score, weights):
    """AUC with non-negative weights per image, for one weight vector (n,) or many at once (B, n): each pair of a
    fake and a real counts with the product of their weights, ties half. With integer weights it equals the AUC of
    the sample in which each image is repeated that many times (what a bootstrap resample is). A float for one
    weight vector, an array of B for many; NaN where the weights leave no fake or no real."""
    y = np.asarray(y_true_fake).reshape(-1).astype(bool)
    s = np.asarray(score, np.float64).reshape(-1)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]  # runs of tied scores
    w_sorted = w[:, order]
    y_sorted = y[order]
    pos = np.add.reduceat(np.where(y_sorted, w_sorted, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(y_sorted, 0.0, w_sorted), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # real weight strictly below each run
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out if np.ndim(weights) == 2 else float(out[0])


def person_bootstrap_difference(y_true_fake, score_a, score_b, groups, n_boot: int = 2000, seed: int = 0,
                                level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of AUC(b) - AUC(a) resampling whole groups (people) with replacement; both models are
    scored on each same resample. Resamples without a fake or without a real are dropped."""
    groups = np.asarray(groups)
    _, idx = np.unique(groups, return_inverse=True)
    n_groups = int(idx.max()) + 1
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, 250):  # chunks keep the (B, n) weight matrix small
        b = min(250, n_boot - start)
        picks = rng.integers(0, n_groups, size=(b, n_groups))
        counts = np.zeros((b, n_groups))
        np.add.at(counts, (np.repeat(np.arange(b), n_groups), picks.reshape(-1)), 1.0)
        w = counts[:, idx]
        diffs.append(weighted_auc(y_true_fake, score_b, w) - weighted_auc(y_true_fake, score_a, w))
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan"), float("nan")
    alpha = 1.0 - level
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# --- a scores file -------------------------------------------------------------------------------------------------
def read_scores(path) -> dict:
    """{"image", "person", "family", "label" (1 = real), "models": {name: p_fake array}} from a ``--scores`` CSV."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        names = [c for c in (reader.fieldnames or []) if c not in META_COLUMNS]
        missing = [c for c in META_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit(f"{path}: not a train.evaluate --scores file (no column {', '.join(missing)})")
        rows = list(reader)
    if not rows or not names:
        raise SystemExit(f"{path}: no images or no model columns")
    return {
        "image": np.array([r["image"] for r in rows]),
        "person": np.array([r["person"] for r in rows]),
        "family": np.array([r["family"] for r in rows]),
        "label": np.array([int(r["label"]) for r in rows]),
        "models": {n: np.array([float(r[n]) for r in rows]) for n in names},
    }


def unique_name(name: str, taken) -> str:
    """``name``, or ``name.2``, ``name.3``, ... when it is taken: how models of the same name get distinct columns."""
    key, k = name, 1
    while key in taken:
        k += 1
        key = f"{name}.{k}"
    return key


def image_stem(path: str) -> str:
    """An image's file name without its folder or extension: how a ``train.pack`` copy's
    ``p000/images/X.webp`` is known as the original build's ``images/X.jpg``."""
    return PurePosixPath(path).stem


def join_scores(tables: list[dict], by: str = "image") -> dict:
    """Several scores tables of the same images (e.g. checkpoints scored in separate runs) as one, rows in the
    first table's order; a model name seen before gets a suffix (".2", ".3", ...). ``by="stem"`` matches the
    images by file name alone (``image_stem``), e.g. a build and its ``train.pack`` copy, re-encoded and renamed;
    each name must then occur once in every table."""
    key = image_stem if by == "stem" else (lambda img: img)
    keys = [key(img) for img in tables[0]["image"]]
    where = {k: i for i, k in enumerate(keys)}
    if len(where) != len(keys):
        raise ValueError(f"two rows of the first scores file have the same {'file name' if by == 'stem' else 'image'}"
                         ": they cannot be matched")
    joined = {k: v for k, v in tables[0].items() if k != "models"}
    joined["models"] = dict(tables[0]["models"])
    for t in tables[1:]:
        t_keys = [key(img) for img in t["image"]]
        if len(t_keys) != len(where) or set(t_keys) != set(where):
            raise ValueError("the scores files do not hold the same images"
                             + ("" if by == "stem" else " (if one is a train.pack copy, try --by stem)"))
        order = np.empty(len(where), dtype=np.int64)
        order[[where[k] for k in t_keys]] = np.arange(len(where))
        for name, p in t["models"].items():
            joined["models"][unique_name(name, joined["models"])] = p[order]
    return joined


def mean_log_odds(table: dict, names: list[str]) -> np.ndarray:
    """The ensemble of ``names``: p_fake from the mean of their log-odds (each clipped to 1e-7 of 0 and 1)."""
    p = np.clip(np.stack([table["models"][n] for n in names]), 1e-7, 1 - 1e-7)
    return 1.0 / (1.0 + np.exp(-np.log(p / (1 - p)).mean(axis=0)))


def compare(table: dict, base: str, other: str, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row for the whole split and one per family (its fakes against all reals): both AUCs, the difference
    (other - base), DeLong's interval and p, and the by-person bootstrap interval."""
    is_real = table["label"] == 1
    fams = sorted(set(table["family"][~is_real]))
    rows = []
    for fam, sel in [("all", np.ones(len(is_real), bool))] + [(f, is_real | (table["family"] == f)) for f in fams]:
        y = (~is_real[sel]).astype(np.int64)
        a, b = table["models"][base][sel], table["models"][other][sel]
        d = delong_test(y, a, b)
        lo, hi = person_bootstrap_difference(y, a, b, table["person"][sel], n_boot=n_boot, seed=seed)
        rows.append({"family": fam, "n_real": int((y == 0).sum()), "n_fake": int(y.sum()),
                     "auc_base": d["auc_a"], "auc_model": d["auc_b"], "diff": d["diff"],
                     "delong_ci": list(d["ci"]), "delong_p": d["p"], "person_ci": [lo, hi]})
    return rows


def format_comparison(base: str, other: str, rows: list[dict]) -> str:
    head = (f"{other} against {base} (difference = {other} - {base}; 95% intervals)\n"
            f"{'family':<12}{'reals':>6}{'fakes':>6}{'AUC base':>10}{'AUC model':>10}{'diff':>9}"
            f"{'DeLong interval':>20}{'p':>8}{'by-person interval':>22}")
    lines = [head]
    for r in rows:
        dl, pl = r["delong_ci"], r["person_ci"]
        lines.append(f"{r['family']:<12}{r['n_real']:>6}{r['n_fake']:>6}{r['auc_base']:>10.4f}{r['auc_model']:>10.4f}"
                     f"{r['diff']:>+9.4f}{f'[{dl[0]:+.4f}, {dl[1]:+.4f}]':>20}{r['delong_p']:>8.3f}"
                     f"{f'[{pl[0]:+.4f}, {pl[1]:+.4f}]':>22}")
    return "\n".join(lines)


def compare_clip_frames(base: dict, other: dict, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Real clip frames flagged by two models at their own thresholds (two ``train.evaluate --videos`` results on
    the same clips): each one's rate, the frames only one flags, and a percentile interval for the difference of
    the rates (other - base) resampling whole clips."""
    fa, fb = [], []
    for va, vb in zip(base["per_video"], other["per_video"], strict=True):
        if va["video"] != vb["video"] or len(va["frame_p_fake"]) != len(vb["frame_p_fake"]):
            raise ValueError(f"the two results did not score the same frames ({va['video']}, {vb['video']})")
        fa.append(np.asarray(va["frame_p_fake"]) > base["threshold"])
        fb.append(np.asarray(vb["frame_p_fake"]) > other["threshold"])
    a, b = np.concatenate(fa), np.concatenate(fb)
    if len(a) == 0:
        raise ValueError("no frames with a face")
    hits_a = np.array([x.sum() for x in fa], np.float64)
    hits_b = np.array([x.sum() for x in fb], np.float64)
    sizes = np.array([len(x) for x in fa], np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(fa), size=(n_boot, len(fa)))
    with np.errstate(invalid="ignore", divide="ignore"):
        d = (hits_b[pick].sum(1) - hits_a[pick].sum(1)) / sizes[pick].sum(1)
    d = d[np.isfinite(d)]
    alpha = 1.0 - level
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    return {"base": base["model"], "model": other["model"], "frames": int(len(a)), "clips": len(fa),
            "rate_base": float(a.mean()), "rate_model": float(b.mean()), "diff": float(b.mean() - a.mean()),
            "only_base": int((a & ~b).sum()), "only_model": int((b & ~a).sum()), "both": int((a & b).sum()),
            "clip_ci": [float(lo), float(hi)]}


def format_clip_comparison(r: dict) -> str:
    lo, hi = r["clip_ci"]
    return (f"{r['model']} against {r['base']}: real clip frames flagged at each one's own threshold, "
            f"{100 * r['rate_model']:.2f}% against {100 * r['rate_base']:.2f}% of {r['frames']} frames in "
            f"{r['clips']} clips ({r['both']} flagged by both, {r['only_model']} by {r['model']} only, "
            f"{r['only_base']} by {r['base']} only); difference {100 * r['diff']:+.2f} points, 95% interval "
            f"resampling clips {100 * lo:+.2f} to {100 * hi:+.2f}")


def matched_clip_frames(videos_result: dict, table: dict, model: str, tprs) -> list[dict]:
    """At the thresholds where ``model`` catches each share in ``tprs`` of the fakes of a scores table: the share
    of its real clip frames (``videos_result``) and of the table's reals it flags."""
    from .diagnose import matched_false_alarms

    frames = [p for clip in videos_result["per_video"] for p in clip["frame_p_fake"]]
    scores, real = table["models"][model], table["label"] == 1
    rows = matched_false_alarms(scores[~real], frames, tprs)
    for r in rows:
        r["reals_flagged"] = float(np.mean(scores[real] > r["threshold"]))
    return rows


def format_matched(model: str, rows: list[dict]) -> str:
    cells = [f"{100 * r['tpr_achieved']:.1f}% caught: clip frames {100 * r['frames_flagged']:.2f}%, "
             f"reals {100 * r['reals_flagged']:.2f}%" for r in rows]
    return f"  {model}: " + " | ".join(cells)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scores", type=Path, nargs="*",
                   help="CSV(s) written by python -m train.evaluate --scores on the same images (joined by image)")
    p.add_argument("--by", choices=("image", "stem"), default="image",
                   help="join several CSVs by the image's path (default) or by its file name without folder or "
                        "extension, e.g. a build against its train.pack copy")
    p.add_argument("--videos", type=Path, nargs="+", metavar="JSON",
                   help="instead: compare real clip frames flagged, from python -m train.evaluate --videos ... --json")
    p.add_argument("--matched", type=Path, metavar="CSV",
                   help="--videos: also compare at matched detection rates on this scores file's fakes")
    p.add_argument("--tpr", type=float, action="append",
                   help="--matched: detection rates to match (repeatable; default 0.6, 0.65, 0.7)")
    p.add_argument("--mean", action="append", default=[], metavar="A+B[+C...]",
                   help="add a column: the mean log-odds of these models, an ensemble of them (repeatable)")
    p.add_argument("--base", help="the column to compare against (default: the first model column)")
    p.add_argument("--model", action="append", default=[], help="column(s) to compare (default: all the others)")
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples of people")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the comparisons here")
    args = p.parse_args(argv)
    if bool(args.scores) == bool(args.videos):
        p.error("give scores CSV(s) or --videos JSON")
    if args.matched and not args.videos:
        p.error("--matched goes with --videos")
    if args.mean and args.videos:
        p.error("--mean goes with scores CSVs, not --videos")
    for f in [*(args.videos or args.scores), *([args.matched] if args.matched else [])]:
        if not f.is_file():
            p.error(f"no file {f}")
    source = ", ".join(map(str, args.videos or args.scores))

    def pick(names: list[str], source) -> tuple[str, list[str]]:
        base = args.base or names[0]
        others = args.model or [n for n in names if n != base]
        for n in [base, *others]:
            if n not in names:
                p.error(f"no model {n!r} in {source} (it has {', '.join(names)})")
        if not others:
            p.error(f"{source} holds one model ({base}); nothing to compare")
        return base, others

    if args.videos:
        results = {}
        for f in args.videos:
            data = json.loads(f.read_text())
            if data.get("mode") != "videos":
                p.error(f"{f} is not train.evaluate --videos JSON")
            for r in data["results"]:
                key = unique_name(r["model"], results)
                results[key] = {**r, "model": key}
        base, others = pick(list(results), source)
        out = [compare_clip_frames(results[base], results[o], n_boot=args.boot, seed=args.seed) for o in others]
        for r in out:
            print(format_clip_comparison(r))
        if args.matched:
            table = read_scores(args.matched)
            missing = [n for n in [base, *others] if n not in table["models"]]
            if missing:
                p.error(f"{args.matched} has no column {', '.join(missing)}")
            print(f"at matched shares of the fakes in {args.matched} caught:")
            for n in [base, *others]:
                rows = matched_clip_frames(results[n], table, n, args.tpr or (0.6, 0.65, 0.7))
                print(format_matched(n, rows))
                out.append({"model": n, "matched": str(args.matched), "rows": rows})
    else:
        try:
            table = join_scores([read_scores(f) for f in args.scores], by=args.by)
        except ValueError as err:
            p.error(f"{source}: {err}")
        for spec in args.mean:
            members = spec.split("+")
            unknown = [n for n in members if n not in table["models"]]
            if len(set(members)) < 2:
                p.error(f"--mean {spec}: name two models or more, joined by '+'")
            if unknown:
                p.error(f"--mean {spec}: no model {', '.join(map(repr, unknown))} in {source} "
                        f"(it has {', '.join(table['models'])})")
            if spec in table["models"]:
                p.error(f"--mean {spec}: already a column")
            table["models"][spec] = mean_log_odds(table, members)
        base, others = pick(list(table["models"]), source)
        if len(set(table["label"])) < 2:
            p.error(f"{source} needs both real and fake images")
        out = []
        for other in others:
            rows = compare(table, base, other, n_boot=args.boot, seed=args.seed)
            print(format_comparison(base, other, rows))
            out.append({"base": base, "model": other, "rows": rows})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"input": str(source), "boot": args.boot,
                                         "seed": args.seed, "comparisons": out}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
