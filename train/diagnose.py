"""Where a detector's evidence runs out: diagnostics beside ``train.evaluate``'s scores.

``degradations``: the split scored again after each of the degradations that training imitates (lost resolution,
blur, JPEG, an H.264 round trip, the whole training augmentation as run without ``--h264``). Per family AUC, and the share of real faces
judged fake at the model's own threshold. If the training augmentation erased the evidence, or if video coding alone
made real faces look fake, it shows here.

``visibility``: each forgery of a ``train.build_dataset`` split is paired with the real crop of the same photo, and
scored by how much it changed the pixels (mean absolute difference inside its mask, in grey levels). AUC per family
within bins of that visibility tells whether a family is hard because its forgeries are invisible or because the
detector misses visible ones. The same AUCs by the share of the crop the mask covers tell small forgeries (a mouth,
the eyes) from whole-face ones.

``selfblend``: which ingredient of a self-blend the detector sees. Self-blends are made afresh on the split's real
crops with one ingredient at a time (a colour change, a frequency change, a slight shift; ``mtl.forge.selfblend``),
all three, and all three on a part of the face only; each variant's AUC against the same real crops. Both sides get
one more JPEG round trip, as ``train.build_dataset`` gives every crop.

``probe``: whether the encoder holds evidence that the paper's read-out leaves unused. Logistic regressions (linear
probes) are fitted, on ``--fit-split`` (default train), to each face's channel statistics (mean, standard deviation
and maximum over the grid) of the latent and, for a timm encoder, of every backbone stage; then scored on ``--split``
beside the paper's read-out. A family that a probe catches far better than the read-out is one the network sees
but does not report; one that no probe catches is one the encoder does not see.

``ensemble``: several checkpoints scored together. Each model's evidence (its activation difference, a_fake -
a_real) is put in units of its spread over a reference split (``--reference-split``, default val), so that models with
different activation scales weigh alike, and the average is scored beside each model alone. If checkpoints trained
differently make different mistakes, their average is better than the best of them.

``readout``: whether the paper's read-out dilutes small forgeries. Each half is scored by its mean |activation| over
the whole latent grid, so a forgery of a tenth of the face moves it a tenth as much; scored instead over the fake
half's strongest cells, beside the paper's read-out, per family and for self-blends under a tenth of the crop, with
the difference from the paper's and a 95% interval resampling people (the exact network, fp32; no mirror).

``tradeoff``: how many real video frames a model flags when it catches a given share of a split's fakes. Two
checkpoints calibrated to different thresholds cannot be compared by the false alarms each raises at its own
threshold (a stricter threshold lowers both the alarms and the detections); at matched detection rates they can.

    python -m train.diagnose degradations --data data/forge-v1 --split val --limit 1200 --model checkpoints/regnetx-forge
    python -m train.diagnose visibility --data data/forge-v1 --split test --model checkpoints/regnetx-forge
    python -m train.diagnose selfblend --data data/forge-v1 --split test --limit 900 --model checkpoints/regnetx-forge
    python -m train.diagnose tradeoff --data data/forge-v1 --split test --model checkpoints/regnetx-forge \
        --videos ../shared/data/videos --every 10
    python -m train.diagnose ensemble --data data/forge-v1 --split test --model checkpoints/regnetx-forge \
        --model checkpoints/classnseg-forge
    python -m train.diagnose readout --data data/forge-v2 --split val --model checkpoints/lite0-forge
    python -m train.diagnose probe --data data/forge-v2 --split test --fit-limit 3600 --model checkpoints/lite0-forge
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import cv2
import numpy as np

from mtl.constants import FAMILIES
from train import metrics as M
from train.data import (augment_pair, h264_round_trip, jpeg_round_trip, read_manifest, scale_round_trip,
                        source_photo)
from train.evaluate import ManifestFrames, collect, evaluate_real_videos, open_split

VISIBILITY_BINS = [(0, 2), (2, 4), (4, 8), (8, 16), (16, 256)]
AREA_BINS = [(0.0, 0.05), (0.05, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.5), (0.5, 1.01)]  # share of the crop


# --- degradations --------------------------------------------------------------------------------------------------
def downscale(rgb: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    return scale_round_trip(rgb, max(int(rgb.shape[0] * rng.uniform(lo, hi)), 16))


def jpeg(rgb: np.ndarray, rng: np.random.Generator, lo: int, hi: int) -> np.ndarray:
    return jpeg_round_trip(rgb, int(rng.integers(lo, hi + 1)))


def _on_image(fn):
    return lambda rgb, mask, rng: (fn(rgb, rng), mask)


DEGRADATIONS = {
    "none": None,
    "downscale 0.3-0.5": _on_image(lambda x, r: downscale(x, r, 0.3, 0.5)),
    "downscale 0.5-0.75": _on_image(lambda x, r: downscale(x, r, 0.5, 0.75)),
    "blur 0.3-1.2": _on_image(lambda x, r: cv2.GaussianBlur(x, (0, 0), r.uniform(0.3, 1.2))),
    "jpeg 40-60": _on_image(lambda x, r: jpeg(x, r, 40, 60)),
    "jpeg 75-95": _on_image(lambda x, r: jpeg(x, r, 75, 95)),
    "h264 crf 23": _on_image(lambda x, r: h264_round_trip(x, 23)),
    "h264 crf 30": _on_image(lambda x, r: h264_round_trip(x, 30)),
    "training augmentation": augment_pair,
}


class DegradedFrames(ManifestFrames):
    """A split with one degradation applied to every crop (seeded by the file name, so reruns agree)."""

    def __init__(self, base: ManifestFrames, degrade):
        super().__init__(base.root, "", rows=base.rows)
        self.degrade = degrade

    def _read(self, row: dict):
        rgb, mask = super()._read(row)
        if self.degrade is None:
            return rgb, mask
        rng = np.random.default_rng(zlib.crc32(row["image"].encode()))
        rgb, mask = self.degrade(np.ascontiguousarray(rgb), np.ascontiguousarray(mask), rng)
        return np.ascontiguousarray(rgb), np.ascontiguousarray(mask)


def family_aucs(s: dict, fake_sel: np.ndarray | None = None) -> dict:
    """AUC of all fakes (or those in ``fake_sel``) and of each family's, each against all the reals."""
    fake = s["label"] == 0
    sel = fake if fake_sel is None else fake & fake_sel
    real = ~fake
    out = {}
    for name, fam in [("all", sel)] + [(f, sel & (s["family"] == f)) for f in FAMILIES]:
        keep = fam | real
        out[name] = M.roc_auc(fake[keep], s["p_fake"][keep]) if fam.any() and real.any() else float("nan")
    return out


def degradations(model, data: ManifestFrames, names=None, precision: str = "bf16") -> list[dict]:
    rows = []
    for name in names or DEGRADATIONS:
        s = collect(model, DegradedFrames(data, DEGRADATIONS[name]), precision=precision, batch_size=64)
        reals = s["p_fake"][s["label"] == 1]
        rows.append({"degradation": name, "auc": family_aucs(s),
                     "real_flagged": float((reals > model.threshold).mean()) if len(reals) else float("nan")})
    return rows


# --- visibility ----------------------------------------------------------------------------------------------------
def real_twins(rows: list[dict], candidates: list[dict] | None = None) -> dict[str, str]:
    """For each forgery built by ``train.build_dataset`` (``<photo>_<k>_<family>``) in ``rows``, the image of its
    photo's real crop (``<photo>_0_real``), looked up among ``candidates`` (default: ``rows``)."""
    real_of = {source_photo(r): r["image"] for r in (rows if candidates is None else candidates)
               if r["label"] == "real"}
    return {r["image"]: real_of[source_photo(r)] for r in rows
            if r["label"] == "fake" and source_photo(r) in real_of}


def visibility(root: Path, rows: list[dict]) -> np.ndarray:
    """Mean |fake - real| over the fake's mask (grey levels, averaged over channels); NaN for reals and unpaired.

    The real twin is looked up in the whole manifest, so a ``--limit`` subset still pairs every forgery."""
    twins = real_twins(rows, read_manifest(root))
    out = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        twin = twins.get(r["image"])
        if twin is None or not r["mask"]:
            continue
        fake = cv2.imread(str(root / r["image"])).astype(np.float32)
        real = cv2.imread(str(root / twin)).astype(np.float32)
        mask = cv2.imread(str(root / r["mask"]), cv2.IMREAD_GRAYSCALE) > 127
        if fake.shape != real.shape or mask.shape != fake.shape[:2]:
            continue
        out[i] = float(np.abs(fake - real).mean(axis=2)[mask].mean()) if mask.any() else 0.0
    return out


def mask_area(root: Path, rows: list[dict]) -> np.ndarray:
    """The share of the crop each forgery's mask covers (binarised at 128, as training reads it); NaN without one."""
    out = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        if r["label"] == "fake" and r["mask"]:
            mask = cv2.imread(str(root / r["mask"]), cv2.IMREAD_GRAYSCALE)
            if mask is not None:
                out[i] = float((mask > 127).mean())
    return out


def _binned_aucs(s: dict, fam_sel: np.ndarray, value: np.ndarray, bins, fam: str) -> list[dict]:
    out = []
    for lo, hi in bins:
        sel = fam_sel & (value >= lo) & (value < hi)
        out.append({"from": lo, "to": hi, "n": int(sel.sum()), "auc": family_aucs(s, sel)[fam] if sel.any() else None})
    return out


def by_visibility(model, data: ManifestFrames, precision: str = "bf16") -> dict:
    vis = visibility(data.root, data.rows)
    area = mask_area(data.root, data.rows)
    s = collect(model, data, precision=precision, batch_size=64)
    fake = s["label"] == 0
    out = {"paired": int(np.isfinite(vis[fake]).sum()), "fakes": int(fake.sum()), "families": {}}
    for fam in FAMILIES:
        f = fake & (s["family"] == fam)
        if not f.any():
            continue
        paired, masked = f & np.isfinite(vis), f & np.isfinite(area)
        out["families"][fam] = {
            "median": float(np.median(vis[paired])) if paired.any() else float("nan"),
            "bins": _binned_aucs(s, paired, vis, VISIBILITY_BINS, fam),
            "median_area": float(np.median(area[masked])) if masked.any() else float("nan"),
            "area_bins": _binned_aucs(s, masked, area, AREA_BINS, fam),
        }
    return out


# --- self-blend ingredients ---------------------------------------------------------------------------------------
WHOLE_FACE, FACE_PART = ["hull", "inner", "ellipse"], ["mouth", "eyes", "nose"]
SELFBLEND_VARIANTS = {  # name: make_source's switches, the blend mask's region kinds
    "colour only": (dict(colour=True, frequency=False, shift=False), WHOLE_FACE),
    "frequency only": (dict(colour=False, frequency=True, shift=False), WHOLE_FACE),
    "shift only": (dict(colour=False, frequency=False, shift=True), WHOLE_FACE),
    "all three": (dict(colour=True, frequency=True, shift=True), WHOLE_FACE),
    "all three, a part": (dict(colour=True, frequency=True, shift=True), FACE_PART),
}


def forge_selfblend_variants(rgb: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> dict:
    """Each variant of ``SELFBLEND_VARIANTS`` forged on one real crop: name -> (crop, mean change inside the mask)."""
    from mtl.forge import blend
    from mtl.forge.selfblend import make_source
    from train.build_dataset import recompress

    out = {}
    for name, (switches, kinds) in SELFBLEND_VARIANTS.items():
        alpha = blend.blend_mask(rgb.shape, landmarks, rng, kinds)
        forged = blend.alpha_blend(make_source(rgb, landmarks, rng, **switches), rgb, alpha)
        inside = alpha > 0.5
        change = float(np.abs(forged.astype(np.float32) - rgb).mean(axis=2)[inside].mean()) if inside.any() else 0.0
        out[name] = (recompress(forged, rng), change)
    return out


def selfblend_ingredients(model, data: ManifestFrames, precision: str = "fp32", seed: int = 0) -> dict:
    from mtl.faces import face_landmarks
    from mtl.preprocess import to_model_input
    from train.build_dataset import recompress

    reals, fakes, changes, skipped = [], {k: [] for k in SELFBLEND_VARIANTS}, {k: [] for k in SELFBLEND_VARIANTS}, 0
    for i, row in enumerate(r for r in data.rows if r["label"] == "real"):
        rgb = cv2.cvtColor(cv2.imread(str(data.root / row["image"])), cv2.COLOR_BGR2RGB)
        faces = face_landmarks(rgb)
        if not faces:
            skipped += 1
            continue
        rng = np.random.default_rng([seed, i])
        reals.append(recompress(rgb, rng))
        for name, (crop, change) in forge_selfblend_variants(rgb, faces[0], rng).items():
            fakes[name].append(crop)
            changes[name].append(change)

    def scores(crops):
        return np.concatenate([model.predict(to_model_input(crops[j:j + 32]), precision).p_fake.numpy()
                               for j in range(0, len(crops), 32)])

    nan = float("nan")
    if not reals:  # no real crop with landmarks: nothing to forge or score
        return {"reals": 0, "skipped_no_landmarks": skipped, "reals_flagged": nan,
                "variants": {name: {"auc": nan, "median_change": nan, "caught": nan} for name in SELFBLEND_VARIANTS}}
    real_scores = scores(reals)
    variants = {}
    for name in SELFBLEND_VARIANTS:
        fake_scores = scores(fakes[name])
        y = np.r_[np.zeros(len(real_scores)), np.ones(len(fake_scores))]
        variants[name] = {"auc": M.roc_auc(y, np.r_[real_scores, fake_scores]),
                          "median_change": float(np.median(changes[name])),
                          "caught": float(np.mean(fake_scores > model.threshold))}
    return {"reals": len(reals), "skipped_no_landmarks": skipped,
            "reals_flagged": float(np.mean(real_scores > model.threshold)), "variants": variants}


# --- detections against false alarms on real video ------------------------------------------------------------------
DEFAULT_TPRS = (0.30, 0.35, 0.40, 0.45, 0.50)


def matched_false_alarms(fake_scores, real_frame_scores, tprs=DEFAULT_TPRS) -> list[dict]:
    """For each detection rate in ``tprs``: the threshold at which that share of ``fake_scores`` is judged fake
    (score > threshold), the share actually caught there (tied scores can raise it), and the share of
    ``real_frame_scores`` judged fake at it."""
    fakes = np.sort(np.asarray(fake_scores, dtype=np.float64))
    frames = np.asarray(real_frame_scores, dtype=np.float64)
    rows = []
    for tpr in tprs:
        k = int(round(tpr * len(fakes)))  # this many fakes above the threshold
        t = float(np.nextafter(fakes[-k], -np.inf)) if k >= 1 else float(fakes[-1])
        rows.append({"tpr": float(tpr), "threshold": t, "tpr_achieved": float(np.mean(fakes > t)),
                     "frames_flagged": float(np.mean(frames > t)) if len(frames) else float("nan")})
    return rows


def tradeoff(model, data: ManifestFrames, videos, every: int = 10, tprs=DEFAULT_TPRS,
             precision: str = "fp32") -> dict:
    """The split's fakes scored as ``train.evaluate`` does, the videos' frames through the app's video pipeline."""
    s = collect(model, data, precision=precision)
    v = evaluate_real_videos(model, videos, every=every)
    frames = [p for clip in v["per_video"] for p in clip["frame_p_fake"]]
    return {"own_threshold": float(model.threshold), "own_tpr": M.tpr_at_threshold(1 - s["label"], s["p_fake"],
                                                                                    model.threshold),
            "frames_flagged_at_own": v["fpr_frames"], "frames": len(frames),
            "rows": matched_false_alarms(s["p_fake"][s["label"] == 0], frames, tprs)}


# --- several checkpoints together ----------------------------------------------------------------------------------
def evidence(s: dict) -> np.ndarray:
    """What a model's verdict rests on: the fake half's activation minus the real half's (``collect``'s output)."""
    a = s["activations"].astype(np.float64)
    return a[:, 0] - a[:, 1]


def ensemble(models, names, data: ManifestFrames, reference: ManifestFrames, precision: str = "fp32") -> dict:
    """Per-family AUC of each model and of the average of their standardized evidence (see the module's text)."""
    if len(models) < 2:
        raise ValueError(f"an ensemble needs at least two models, got {len(models)}")
    rows, standardized = [], []
    for model, name in zip(models, names):
        s = collect(model, data, precision=precision)
        ref = evidence(collect(model, reference, precision=precision))
        z = (evidence(s) - ref.mean()) / max(float(ref.std()), 1e-12)
        standardized.append(z)
        rows.append({"model": name, "auc": family_aucs(dict(s, p_fake=z))})
    average = np.mean(standardized, axis=0)
    rows.append({"model": f"average of the {len(models)}", "auc": family_aucs(dict(s, p_fake=average))})
    return {"crops": len(data), "reference_crops": len(reference), "rows": rows}


# --- read-outs of the latent ---------------------------------------------------------------------------------------
READOUT_CELLS = (16, 64, 128)  # of the latent grid's cells (16 x 16 = 256 for a 256x256 face)
SMALL_MASK = 0.10  # share of the crop: a mouth, the eyes or the nose alone
PAPER_READOUT = "every cell (the paper)"


def cell_activations(model, data: ManifestFrames, batch_size: int = 32) -> dict:
    """Per face, each half's mean |latent| at every cell of the latent grid (the exact network, fp32): "fake" and
    "real" (N x cells), "label" (1 = real), "family", "area" (the share of the crop its mask covers)."""
    import torch

    from mtl.model import half_cell_activations

    out = {k: [] for k in ("fake", "real", "label", "family", "area")}
    model.eval()
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    with torch.inference_mode():
        for batch in loader:
            cells = half_cell_activations(model.encoder(model.encoder_input(batch["image"].float()))).numpy()
            out["fake"].append(cells[:, 0])
            out["real"].append(cells[:, 1])
            out["label"].append(batch["label"].reshape(-1).numpy())
            out["family"].extend(batch["family"])
            out["area"].append(batch["mask"].float().mean(dim=(1, 2)).numpy())
    return {k: np.asarray(v) if k == "family" else np.concatenate(v) for k, v in out.items()}


def readout_scores(fake: np.ndarray, real: np.ndarray, cells=READOUT_CELLS) -> dict[str, np.ndarray]:
    """The evidence a face is fake under each read-out: the paper's (each half's mean over every cell, fake minus
    real), and the fake half's mean over only its ``k`` strongest cells minus the real half's mean."""
    scores = {PAPER_READOUT: fake.mean(1) - real.mean(1)}
    for k in cells:
        if k < fake.shape[1]:
            scores[f"the fake half's strongest {k}"] = np.sort(fake, axis=1)[:, -k:].mean(1) - real.mean(1)
    return scores


def readouts(model, data: ManifestFrames, cells=READOUT_CELLS, n_boot: int = 1000) -> dict:
    """Per-family AUC of each read-out, and its difference from the paper's with a 95% interval resampling people.

    The paper scores a half by its mean over the whole latent grid, so a forgery that covers a tenth of the face
    moves it a tenth as much as one that covers all of it. If small forgeries are missed because their evidence is
    diluted, a read-out of the strongest cells catches them; the "small masks" column (self-blends under
    ``SMALL_MASK`` of the crop) says whether it does.
    """
    c = cell_activations(model, data)
    people = np.array([r.get("person", "") for r in data.rows])
    table = against_the_paper(readout_scores(c["fake"], c["real"], cells), c["label"] == 0, c["family"], c["area"],
                              people, n_boot)
    return {"crops": len(data), "cells": int(c["fake"].shape[1]), **table}


def against_the_paper(scores: dict[str, np.ndarray], fake: np.ndarray, family: np.ndarray, area: np.ndarray,
                      people: np.ndarray, n_boot: int = 1000) -> dict:
    """Per-family AUC of each score (the first is the paper's read-out), and each other score's difference from it
    with a 95% interval resampling people; a column for self-blends under ``SMALL_MASK`` of the crop."""
    from train.compare import person_bootstrap_difference

    groups = [("all", fake)] + [(f, fake & (family == f)) for f in FAMILIES]
    groups.append((f"selfblend, mask under {100 * SMALL_MASK:.0f}%",
                   fake & (family == "selfblend") & (area < SMALL_MASK)))
    groups = [(g, sel) for g, sel in groups if sel.any()]
    base = next(iter(scores.values()))
    rows = []
    for name, score in scores.items():
        row = {"readout": name, "auc": {}, "diff": {}}
        for g, sel in groups:
            keep = sel | ~fake
            row["auc"][g] = M.roc_auc(fake[keep], score[keep]) if (~fake).any() else float("nan")
            if rows:
                lo, hi = person_bootstrap_difference(fake[keep].astype(np.int64), base[keep], score[keep],
                                                     people[keep], n_boot=n_boot)
                row["diff"][g] = [row["auc"][g] - rows[0]["auc"][g], lo, hi]
        rows.append(row)
    return {"groups": {g: int(s.sum()) for g, s in groups}, "rows": rows}


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
    fit, f = pooled_features(model, fit_data), pooled_features(model, data)
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


# --- command line --------------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    return "  -  " if v is None or not np.isfinite(v) else f"{v:.3f}"


def format_degradations(rows: list[dict]) -> str:
    head = f"{'degradation':24s} " + " ".join(f"{c:>9s}" for c in ["all", *FAMILIES]) + "  reals flagged"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['degradation']:24s} " + " ".join(f"{_fmt(r['auc'][c]):>9s}" for c in ["all", *FAMILIES])
                     + f"  {100 * r['real_flagged']:12.1f}%")
    return "\n".join(lines)


def format_visibility(v: dict) -> str:
    lines = [f"forgeries paired with their real crop: {v['paired']} of {v['fakes']}",
             "AUC against all reals, by mean |fake - real| inside the mask (grey levels):"]
    for fam, d in v["families"].items():
        cells = [f"{b['from']}-{b['to'] if b['to'] < 256 else ''}: {_fmt(b['auc'])} (n {b['n']})"
                 for b in d["bins"] if b["n"]]
        lines.append(f"  {fam:10s} median {d['median']:5.1f}   " + "   ".join(cells))
    lines.append("AUC against all reals, by the share of the crop the mask covers:")
    for fam, d in v["families"].items():
        cells = [f"{100 * b['from']:.0f}-{min(100, 100 * b['to']):.0f}%: {_fmt(b['auc'])} (n {b['n']})"
                 for b in d["area_bins"] if b["n"]]
        lines.append(f"  {fam:10s} median {100 * d['median_area']:4.0f}%   " + "   ".join(cells))
    return "\n".join(lines)


def format_selfblend(r: dict) -> str:
    lines = [f"self-blends made on {r['reals']} real crops ({r['skipped_no_landmarks']} without landmarks skipped); "
             f"{100 * r['reals_flagged']:.1f}% of the reals flagged",
             f"{'variant':20s} {'AUC':>6s} {'caught':>7s}  median change inside the mask (grey levels)"]
    lines += [f"{name:20s} {_fmt(v['auc']):>6s} {100 * v['caught']:6.1f}%  {v['median_change']:.1f}"
              for name, v in r["variants"].items()]
    return "\n".join(lines)


def format_tradeoff(t: dict) -> str:
    lines = [f"at its own threshold {t['own_threshold']:.4f}: {100 * t['own_tpr']:.1f}% of fakes caught, "
             f"{100 * t['frames_flagged_at_own']:.2f}% of {t['frames']} real video frames flagged",
             f"{'fakes caught':>14s} {'threshold':>10s} {'frames flagged':>15s}"]
    lines += [f"{100 * r['tpr_achieved']:13.1f}% {r['threshold']:10.4f} {100 * r['frames_flagged']:14.2f}%"
              for r in t["rows"]]
    return "\n".join(lines)


def format_readouts(r: dict) -> str:
    groups = list(r["groups"])
    lines = [f"AUC on {r['crops']} crops" + (f" ({r['cells']} latent cells)" if "cells" in r else "")
             + "; fakes per column: "
             + ", ".join(f"{g} {n}" for g, n in r["groups"].items()),
             f"{'read-out':32s} " + " ".join(f"{g[:24]:>24s}" for g in groups)]
    for row in r["rows"]:
        lines.append(f"{row['readout']:32s} " + " ".join(f"{_fmt(row['auc'][g]):>24s}" for g in groups))
        if row["diff"]:
            cells = [f"{d:+.4f} ({lo:+.4f},{hi:+.4f})" for d, lo, hi in (row["diff"][g] for g in groups)]
            lines.append(f"{'  minus the paper, 95% by person':32s} " + " ".join(f"{c:>24s}" for c in cells))
    return "\n".join(lines)


def format_probes(r: dict) -> str:
    head = (f"probes fitted on {r['fit_crops']} crops (L2 {r['l2']:g}; features: "
            + ", ".join(f"{k} {n}" for k, n in r["features"].items()) + "), scored on:")
    return head + "\n" + format_readouts(r)


def format_ensemble(e: dict) -> str:
    head = f"{'model':40s} " + " ".join(f"{c:>9s}" for c in ["all", *FAMILIES])
    lines = [f"AUC on {e['crops']} crops; evidence standardized on {e['reference_crops']} reference crops", head,
             "-" * len(head)]
    lines += [f"{r['model'][-40:]:40s} " + " ".join(f"{_fmt(r['auc'][c]):>9s}" for c in ["all", *FAMILIES])
              for r in e["rows"]]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.diagnose", description=__doc__.split("\n\n")[0])
    p.add_argument("analysis",
                   choices=["degradations", "visibility", "selfblend", "tradeoff", "ensemble", "readout", "probe"])
    p.add_argument("--data", type=Path, required=True, help="a dataset root with manifest.csv")
    p.add_argument("--split", default="val")
    p.add_argument("--model", action="append", required=True,
                   help="checkpoint directory or Hub id (ensemble: repeat it, one per model)")
    p.add_argument("--reference-split", default="val", help="ensemble: the split that standardizes each model")
    p.add_argument("--limit", type=int, default=None, help="a seeded random subset of this many rows")
    p.add_argument("--fit-split", default="train", help="probe: the split its regressions are fitted on")
    p.add_argument("--fit-limit", type=int, default=None, help="probe: a seeded random subset of the fit split")
    p.add_argument("--only", action="append", choices=list(DEGRADATIONS), help="degradations: run only these")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="default: bf16, except tradeoff, selfblend and ensemble (fp32, as train.evaluate)")
    p.add_argument("--videos", nargs="+", metavar="DIR_OR_FILE", help="tradeoff: real videos")
    p.add_argument("--every", type=int, default=10, help="tradeoff: analyse every k-th frame")
    p.add_argument("--tpr", type=float, action="append", help="tradeoff: detection rates to match (repeatable)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.analysis == "tradeoff" and not args.videos:
        p.error("tradeoff needs --videos")
    if args.analysis != "ensemble" and len(args.model) > 1:
        p.error(f"{args.analysis} takes one --model; only ensemble takes several")
    if args.analysis == "ensemble" and len(args.model) < 2:
        p.error("ensemble needs at least two --model")

    from mtl import load_model

    models = [load_model(m).eval() for m in args.model]
    model = models[0]
    data = open_split(args.data, args.split, limit=args.limit)
    print(f"{len(models)} models on {args.data} ({args.split}, {len(data)} crops)" if args.analysis == "ensemble" else
          f"{args.model[0]} on {args.data} ({args.split}, {len(data)} crops), threshold {model.threshold:.3f}")
    if args.analysis == "ensemble":
        reference = open_split(args.data, args.reference_split, limit=args.limit)
        result = ensemble(models, args.model, data, reference, args.precision or "fp32")
        print(format_ensemble(result))
    elif args.analysis == "tradeoff":
        result = tradeoff(model, data, args.videos, args.every, args.tpr or DEFAULT_TPRS, args.precision or "fp32")
        print(format_tradeoff(result))
    elif args.analysis == "selfblend":
        result = selfblend_ingredients(model, data, args.precision or "fp32")
        print(format_selfblend(result))
    elif args.analysis == "readout":
        result = readouts(model, data)
        print(format_readouts(result))
    elif args.analysis == "probe":
        result = probes(model, open_split(args.data, args.fit_split, limit=args.fit_limit), data)
        print(format_probes(result))
    elif args.analysis == "degradations":
        result = degradations(model, data, args.only, args.precision or "bf16")
        print(format_degradations(result))
    else:
        result = by_visibility(model, data, args.precision or "bf16")
        print(format_visibility(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
