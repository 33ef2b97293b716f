"""Drawing results onto frames: the manipulation heat map, face boxes and their labels.

Colours come from the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies) and the heat map
from matplotlib's perceptually uniform "plasma". Colour is never the only cue: every box carries a text label
("FAKE 0.93" / "real 0.12"), manipulated faces get a thicker solid box, real ones a thin one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Okabe-Ito, RGB
VERMILLION = (213, 94, 0)  # manipulated
BLUE = (0, 114, 178)  # real
GREY = (120, 120, 120)  # no verdict (not analysed)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)

MASK_FLOOR = 0.2  # pixels below this probability are left untouched, so the photo stays readable


def _plasma_lut() -> np.ndarray:
    try:
        from matplotlib import colormaps

        lut = colormaps["plasma"](np.linspace(0, 1, 256))[:, :3]
        return (lut * 255).round().astype(np.uint8)
    except Exception:  # matplotlib missing: OpenCV ships the same map
        bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_PLASMA)[:, 0]
        return bgr[:, ::-1].copy()


PLASMA = _plasma_lut()


@dataclass(frozen=True)
class BoxLabel:
    """What to draw for one face."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 frame pixels
    text: str
    fake: bool | None  # None: no verdict


def verdict_colour(fake: bool | None) -> tuple[int, int, int]:
    return GREY if fake is None else (VERMILLION if fake else BLUE)


def overlay_mask(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.6, contour: bool = True,
                 region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The image with the manipulation probability painted on (plasma colours, opacity rising with probability).

    mask: HxW float in [0, 1], the same size as the image. region: (x0, y0, x1, y1) limiting the work to where the
    mask can be non-zero (a face's square), which keeps video rendering cheap. Returns a new array.
    """
    out = rgb.copy()
    h, w = rgb.shape[:2]
    if mask.shape[:2] != (h, w):
        raise ValueError(f"mask {mask.shape} does not match image {rgb.shape}")
    x0, y0, x1, y1 = (0, 0, w, h) if region is None else region
    x0, y0, x1, y1 = max(0, int(x0)), max(0, int(y0)), min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    if x1 <= x0 or y1 <= y0:
        return out
    m = mask[y0:y1, x0:x1]
    if not np.any(m > MASK_FLOOR):
        return out
    m8 = np.clip(m * 255, 0, 255).astype(np.uint8)
    colour = PLASMA[m8]
    a = np.where(m > MASK_FLOOR, alpha * (0.4 + 0.6 * m), 0.0).astype(np.float32)[..., None]
    patch = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = (patch * (1 - a) + colour.astype(np.float32) * a).round().astype(np.uint8)
    if contour:
        binary = (m > 0.5).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if contours:
            sub = np.ascontiguousarray(out[y0:y1, x0:x1])
            cv2.drawContours(sub, contours, -1, WHITE, max(1, round(max(w, h) / 800)), cv2.LINE_AA)
            out[y0:y1, x0:x1] = sub
    return out


def draw_boxes(rgb: np.ndarray, labels: list[BoxLabel], inplace: bool = False) -> np.ndarray:
    """Face boxes with a filled label above each (below when there is no room above)."""
    out = rgb if inplace else rgb.copy()
    h, w = out.shape[:2]
    base = max(h, w)
    for lab in labels:
        colour = verdict_colour(lab.fake)
        thick = max(2 if lab.fake else 1, round(base / (300 if lab.fake else 600)))
        x0, y0, x1, y1 = (int(round(v)) for v in lab.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thick, cv2.LINE_AA)
        if not lab.text:
            continue
        scale = max(0.4, min(1.5, (x1 - x0) / 220, base / 1400))
        (tw, th), bl = cv2.getTextSize(lab.text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, round(scale * 1.5)))
        pad = max(2, round(th * 0.3))
        ty = y0 - pad if y0 - th - bl - 2 * pad >= 0 else min(h - 1, y1 + th + pad)
        tx = min(max(0, x0), max(0, w - tw - 2 * pad))
        cv2.rectangle(out, (tx, ty - th - pad), (tx + tw + 2 * pad, ty + bl), colour, -1)
        cv2.putText(out, lab.text, (tx + pad, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE,
                    max(1, round(scale * 1.5)), cv2.LINE_AA)
    return out


def draw_banner(rgb: np.ndarray, text: str, fake: bool | None, inplace: bool = False) -> np.ndarray:
    """A strip along the top-left corner with a short verdict (for annotated video frames)."""
    out = rgb if inplace else rgb.copy()
    h, w = out.shape[:2]
    scale = max(0.4, min(1.2, w / 1000))
    thick = max(1, round(scale * 1.5))
    (tw, th), bl = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(3, round(th * 0.4))
    cv2.rectangle(out, (0, 0), (min(w, tw + 2 * pad), th + bl + 2 * pad), verdict_colour(fake), -1)
    cv2.putText(out, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE, thick, cv2.LINE_AA)
    return out


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """A probability mask in [0, 1] as 0-255 grey (for PNG files)."""
    return np.clip(np.asarray(mask, np.float32) * 255 + 0.5, 0, 255).astype(np.uint8)


def face_label(p_fake: float, fake: bool) -> str:
    return f"FAKE {p_fake:.2f}" if fake else f"real {p_fake:.2f}"
