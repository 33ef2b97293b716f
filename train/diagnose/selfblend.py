"""``selfblend``: which ingredient of a self-blend the detector sees, each made afresh on the split's real crops."""

from __future__ import annotations

import cv2
import numpy as np

from train import metrics as M
from train.diagnose.common import fmt
from train.evaluate import ManifestFrames

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


def format_selfblend(r: dict) -> str:
    lines = [f"self-blends made on {r['reals']} real crops ({r['skipped_no_landmarks']} without landmarks skipped); "
             f"{100 * r['reals_flagged']:.1f}% of the reals flagged",
             f"{'variant':20s} {'AUC':>6s} {'caught':>7s}  median change inside the mask (grey levels)"]
    lines += [f"{name:20s} {fmt(v['auc']):>6s} {100 * v['caught']:6.1f}%  {v['median_change']:.1f}"
              for name, v in r["variants"].items()]
    return "\n".join(lines)
