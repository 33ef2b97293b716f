"""``tradeoff``: the real video frames a model flags when it catches a given share of a split's fakes."""

from __future__ import annotations

import numpy as np

from train import metrics as M
from train.evaluate import ManifestFrames, collect, evaluate_real_videos

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


def format_tradeoff(t: dict) -> str:
    lines = [f"at its own threshold {t['own_threshold']:.4f}: {100 * t['own_tpr']:.1f}% of fakes caught, "
             f"{100 * t['frames_flagged_at_own']:.2f}% of {t['frames']} real video frames flagged",
             f"{'fakes caught':>14s} {'threshold':>10s} {'frames flagged':>15s}"]
    lines += [f"{100 * r['tpr_achieved']:13.1f}% {r['threshold']:10.4f} {100 * r['frames_flagged']:14.2f}%"
              for r in t["rows"]]
    return "\n".join(lines)
