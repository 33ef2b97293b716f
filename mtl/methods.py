"""Which manipulation method a face judged fake looks like.

Two sources, and the result always says which one it came from:

* ``"method head"``: the checkpoint has a classifier over ``FAMILIES`` trained on the forge's labels; its softmax is
  used as it is.
* ``"mask shape"``: without a head, the shape of the segmented region relative to the face is read, following the
  paper's observation that the regions differ between methods: autoencoder swaps (Deepfakes) replace the inner face
  from the brows to the chin; graphics swaps (FaceSwap) paste the convex hull of the landmarks, which reaches higher
  and wider; reenactment (Face2Face) changes mostly the mouth and lower face; blends and retouching touch a smaller
  patch (eyes, nose, a blob). This is a rough hint, not a classifier, and the UI says so.

A face judged real never gets a method (``None``): its mask is empty by design and a guess would only mislead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import FAMILIES, FAMILY_DISPLAY

SOURCE_HEAD = "method head"
SOURCE_SHAPE = "mask shape"
SOURCE_NOTE = {
    SOURCE_HEAD: "predicted by the model's method head",
    SOURCE_SHAPE: "inferred from the shape of the highlighted region (a rough hint)",
}


@dataclass(frozen=True)
class MethodGuess:
    probs: dict[str, float]  # family -> probability, over FAMILIES, summing to 1
    source: str  # SOURCE_HEAD or SOURCE_SHAPE

    @property
    def top(self) -> str:
        return max(self.probs, key=self.probs.get)

    def describe(self) -> str:
        fam = self.top
        return f"{FAMILY_DISPLAY.get(fam, fam)} ({self.probs[fam]:.0%}, {SOURCE_NOTE[self.source]})"

    def display_probs(self) -> dict[str, float]:
        """Probabilities keyed by the human-readable family names (for a gr.Label)."""
        return {FAMILY_DISPLAY.get(k, k): v for k, v in self.probs.items()}


@dataclass(frozen=True)
class ShapeFeatures:
    """The segmented region measured against the face (all fractions in [0, 1], positions in eye-mouth units)."""

    area: float  # region area / face box area
    eyes: float  # fraction of the eye band covered
    mouth: float  # fraction of the mouth band covered
    top: float  # how high the region reaches: 0 = eye line, 1 = mouth line, negative = above the eyes
    width: float  # horizontal extent / face box width


def _landmarks_in_crop(crop, size: int) -> tuple[float, float, float, float, float, float]:
    """Face box (x0, y0, x1, y1), eye line y and mouth line y, in crop pixels."""
    cx, cy, side = crop.square
    s = size / side
    ox, oy = cx - side / 2, cy - side / 2
    b = crop.box
    x0, y0, x1, y1 = (b.x0 - ox) * s, (b.y0 - oy) * s, (b.x1 - ox) * s, (b.y1 - oy) * s
    kp = b.keypoints
    if kp is not None and len(kp) >= 4:  # mediapipe: right eye, left eye, nose tip, mouth centre, ...
        ye = (float(kp[0][1] + kp[1][1]) / 2 - oy) * s
        ym = (float(kp[3][1]) - oy) * s
        if ym - ye > 2:
            return x0, y0, x1, y1, ye, ym
    h = y1 - y0
    return x0, y0, x1, y1, y0 + 0.33 * h, y0 + 0.75 * h  # typical mediapipe box proportions


def shape_features(mask: np.ndarray, crop=None) -> ShapeFeatures | None:
    """Measure a crop mask (size x size, [0, 1]). Without a FaceCrop the face is taken to fill the paper's 1.3x
    square. None when nothing is segmented."""
    size = mask.shape[0]
    region = np.asarray(mask) > 0.5
    if region.sum() < 0.002 * size * size:
        return None
    if crop is not None:
        x0, y0, x1, y1, ye, ym = _landmarks_in_crop(crop, size)
    else:
        m = size * (1 - 1 / 1.3) / 2
        x0, y0, x1, y1 = m, m, size - m, size - m
        ye, ym = y0 + 0.33 * (y1 - y0), y0 + 0.75 * (y1 - y0)
    fw, fh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    unit = max(ym - ye, 1.0)
    ys, xs = np.nonzero(region)

    def band(yc: float, half: float) -> float:
        r0, r1 = int(max(0, yc - half)), int(min(size, yc + half + 1))
        c0, c1 = int(max(0, x0 + 0.15 * fw)), int(min(size, x1 - 0.15 * fw))
        if r1 <= r0 or c1 <= c0:
            return 0.0
        return float(region[r0:r1, c0:c1].mean())

    return ShapeFeatures(
        area=float(min(1.0, region.sum() / (fw * fh))),
        eyes=band(ye, 0.2 * unit),
        mouth=band(ym, 0.2 * unit),
        top=float((np.percentile(ys, 3) - ye) / unit),
        width=float(min(1.0, (np.percentile(xs, 98) - np.percentile(xs, 2)) / fw)),
    )


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def probs_from_shape(f: ShapeFeatures, sharpness: float = 4.0) -> dict[str, float]:
    """Scores for each family from the region's shape, softened into probabilities."""
    eyes, mouth = min(1.0, f.eyes / 0.6), min(1.0, f.mouth / 0.6)  # 60% of a band covered counts as covered
    whole = eyes * mouth
    reaches_forehead = _sigmoid((-f.top - 1.0) / 0.15)  # hull-like: well above the brows
    wide = _sigmoid((f.width - 0.95) / 0.05)
    hull = max(reaches_forehead, wide)
    small = _sigmoid((0.15 - f.area) / 0.04)
    scores = {
        "deepfake": whole * (1 - hull),
        "faceswap": whole * hull,
        "reenact": mouth * (1 - eyes),
        "selfblend": max((1 - mouth) * eyes, small * (1 - whole), (1 - mouth) * (1 - eyes)),
    }
    z = np.array([scores[k] for k in FAMILIES]) * sharpness
    p = np.exp(z - z.max())
    p /= p.sum()
    return {k: float(v) for k, v in zip(FAMILIES, p)}


def guess_method(is_fake: bool, method_probs=None, mask: np.ndarray | None = None, crop=None) -> MethodGuess | None:
    """The method guess for one face: from the head when there is one, else from the mask's shape; None when the face
    is judged real or there is nothing to go on (no head and an empty mask)."""
    if not is_fake:
        return None
    if method_probs is not None:
        p = np.asarray(method_probs, np.float64).reshape(-1)
        if p.shape[0] != len(FAMILIES):
            raise ValueError(f"method head gives {p.shape[0]} classes, expected {len(FAMILIES)}")
        p = p / p.sum() if p.sum() > 0 else np.full(len(FAMILIES), 1 / len(FAMILIES))
        return MethodGuess({k: float(v) for k, v in zip(FAMILIES, p)}, SOURCE_HEAD)
    if mask is None:
        return None
    f = shape_features(mask, crop)
    if f is None:
        return None
    return MethodGuess(probs_from_shape(f), SOURCE_SHAPE)


def combine(guesses: list[MethodGuess | None], weights: list[float] | None = None) -> MethodGuess | None:
    """Weighted average of several guesses (faces of an image, frames of a video); None when there are none."""
    pairs = [(g, 1.0 if weights is None else float(w)) for g, w in zip(guesses, weights or [1.0] * len(guesses))
             if g is not None]
    if not pairs:
        return None
    total = sum(w for _, w in pairs) or 1.0
    probs = {k: sum(g.probs[k] * w for g, w in pairs) / total for k in FAMILIES}
    sources = {g.source for g, _ in pairs}
    return MethodGuess(probs, SOURCE_HEAD if sources == {SOURCE_HEAD} else SOURCE_SHAPE)
