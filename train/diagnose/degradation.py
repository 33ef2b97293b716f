"""``degradations``: the split scored again after each degradation that training imitates."""

from __future__ import annotations

import zlib

import cv2
import numpy as np

from mtl.constants import FAMILIES
from train.data import augment_pair, h264_round_trip, jpeg_round_trip, motion_blur, scale_round_trip
from train.diagnose.common import family_aucs, fmt
from train.evaluate import ManifestFrames, collect


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
    "motion 5 px, whole": _on_image(lambda x, r: motion_blur(x, 5, r.uniform(0, 180))),
    "motion 9 px, whole": _on_image(lambda x, r: motion_blur(x, 9, r.uniform(0, 180))),
    "motion 5 px, mouth": _on_image(lambda x, r: motion_blur(x, 5, r.uniform(0, 180), "mouth")),
    "motion 9 px, mouth": _on_image(lambda x, r: motion_blur(x, 9, r.uniform(0, 180), "mouth")),
    "motion 9 px, eyes": _on_image(lambda x, r: motion_blur(x, 9, r.uniform(0, 180), "eyes")),
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


def degradations(model, data: ManifestFrames, names=None, precision: str = "bf16",
                 keep_scores: bool = False) -> list[dict]:
    """One row per degradation: AUC per family (degraded fakes against degraded reals) and the share of reals
    flagged at the model's threshold; with ``keep_scores`` also "p_fake", every crop's score in split order."""
    rows = []
    for name in names or DEGRADATIONS:
        s = collect(model, DegradedFrames(data, DEGRADATIONS[name]), precision=precision, batch_size=64)
        reals = s["p_fake"][s["label"] == 1]
        rows.append({"degradation": name, "auc": family_aucs(s),
                     "real_flagged": float((reals > model.threshold).mean()) if len(reals) else float("nan"),
                     **({"p_fake": s["p_fake"]} if keep_scores else {})})
    return rows


def format_degradations(rows: list[dict]) -> str:
    head = f"{'degradation':24s} " + " ".join(f"{c:>9s}" for c in ["all", *FAMILIES]) + "  reals flagged"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['degradation']:24s} " + " ".join(f"{fmt(r['auc'][c]):>9s}" for c in ["all", *FAMILIES])
                     + f"  {100 * r['real_flagged']:12.1f}%")
    return "\n".join(lines)
