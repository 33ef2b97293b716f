"""``visibility``: AUC by how much a forgery changed its photo's pixels, and by how much of the crop it covers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mtl.constants import FAMILIES
from train.data import read_manifest, source_photo
from train.diagnose.common import family_aucs, fmt
from train.evaluate import ManifestFrames, collect

VISIBILITY_BINS = [(0, 2), (2, 4), (4, 8), (8, 16), (16, 256)]
AREA_BINS = [(0.0, 0.05), (0.05, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.5), (0.5, 1.01)]  # share of the crop


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


def format_visibility(v: dict) -> str:
    lines = [f"forgeries paired with their real crop: {v['paired']} of {v['fakes']}",
             "AUC against all reals, by mean |fake - real| inside the mask (grey levels):"]
    for fam, d in v["families"].items():
        cells = [f"{b['from']}-{b['to'] if b['to'] < 256 else ''}: {fmt(b['auc'])} (n {b['n']})"
                 for b in d["bins"] if b["n"]]
        lines.append(f"  {fam:10s} median {d['median']:5.1f}   " + "   ".join(cells))
    lines.append("AUC against all reals, by the share of the crop the mask covers:")
    for fam, d in v["families"].items():
        cells = [f"{100 * b['from']:.0f}-{min(100, 100 * b['to']):.0f}%: {fmt(b['auc'])} (n {b['n']})"
                 for b in d["area_bins"] if b["n"]]
        lines.append(f"  {fam:10s} median {100 * d['median_area']:4.0f}%   " + "   ".join(cells))
    return "\n".join(lines)
