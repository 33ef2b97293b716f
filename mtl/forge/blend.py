"""Shared pieces of every forgery: face regions from landmarks, randomised blend masks, colour transfer, warps.

Every family ends the same way: a manipulated *source* frame is alpha-blended over the real frame through a soft mask,
``out = alpha * source + (1 - alpha) * real``, and ``alpha`` is returned as the ground-truth mask. Pixels where alpha is
0 are therefore bit-identical to the real photo. The randomness (mask shape, erosion, blur, colour, warps) follows
Face X-ray and Self-Blended Images: a detector trained on one fixed blend edge learns that edge, not manipulation.
"""

from __future__ import annotations

import cv2
import numpy as np

# mediapipe face-mesh indices (checked against mediapipe's FACEMESH_* sets in tests/test_forge.py).
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
LIPS_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
LEFT_BROW = [276, 283, 282, 295, 285, 300, 293, 334, 296, 336]
RIGHT_BROW = [46, 53, 52, 65, 55, 70, 63, 105, 66, 107]
NOSE = [1, 2, 4, 5, 6, 19, 45, 48, 64, 94, 97, 98, 115, 168, 195, 197, 220, 275, 278, 294, 326, 327, 344, 440]
# The lower face oval (ears down round the chin): with the brows it outlines the face without the forehead, the region
# FaceForensics++ masks cover.
JAW = [356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127]
UPPER_EYELIDS = [384, 385, 386, 387, 388, 157, 158, 159, 160, 161]
LOWER_EYELIDS = [373, 374, 380, 381, 144, 145, 153, 154]
# Stable points for aligning one face onto another (eye corners, nose bridge and tip, mouth corners, chin, cheeks).
ALIGN_POINTS = [33, 133, 362, 263, 168, 6, 1, 4, 61, 291, 152, 234, 454, 10, 199, 9]


def face_scale(landmarks: np.ndarray) -> float:
    """A length that grows with the face: the inter-ocular distance, floored so tiny faces do not give 0."""
    d = np.linalg.norm(landmarks[33] - landmarks[263])
    return float(max(d, 4.0))


def yaw(landmarks: np.ndarray) -> float:
    """Head turn as where the nose tip sits between the cheek edges, along the eye line: 0 frontal, about +-0.5 in
    profile (positive: the nose points to image right)."""
    axis = landmarks[263] - landmarks[33]
    axis = axis / (np.linalg.norm(axis) + 1e-6)
    left, right, nose = (float(np.dot(landmarks[i], axis)) for i in (234, 454, 1))
    return (nose - left) / max(right - left, 1e-6) - 0.5


def fill_polygon(shape: tuple[int, int], points: np.ndarray, hull: bool = True) -> np.ndarray:
    """A float32 0/1 mask of the polygon (or its convex hull) through the points."""
    m = np.zeros(shape[:2], np.uint8)
    pts = np.round(points).astype(np.int32)
    if hull:
        pts = cv2.convexHull(pts)
    cv2.fillPoly(m, [pts.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8)
    return m.astype(np.float32)


def _ellipse(shape, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An ellipse inscribed in the points' minimum-area rectangle (follows the face's tilt), randomly a bit smaller."""
    (cx, cy), (w, h), angle = cv2.minAreaRect(points.astype(np.float32))
    w, h = w * rng.uniform(0.9, 1.05), h * rng.uniform(0.9, 1.05)
    m = np.zeros(shape[:2], np.uint8)
    cv2.ellipse(m, ((cx, cy), (w, h), angle), 1, -1)
    return m.astype(np.float32)


def region_mask(shape, landmarks: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A hard 0/1 mask of a face region.

    kinds: ``hull`` (all landmarks, forehead included), ``inner`` (brows to chin, FaceForensics++-like), ``ellipse``
    (an ellipse fitted to the inner face), ``mouth``, ``eyes``, ``nose``, ``lower`` (nose and mouth), ``center`` (eyes,
    nose and mouth).
    """
    lm = landmarks
    if kind == "hull":
        return fill_polygon(shape, lm)
    if kind == "inner":
        return fill_polygon(shape, lm[JAW + LEFT_BROW + RIGHT_BROW])
    if kind == "ellipse":
        return _ellipse(shape, lm[JAW + LEFT_BROW + RIGHT_BROW], rng)
    parts = {
        "mouth": [LIPS_OUTER],
        "eyes": [LEFT_EYE + LEFT_BROW, RIGHT_EYE + RIGHT_BROW],
        "nose": [NOSE],
        "lower": [NOSE + LIPS_OUTER],
        "center": [LEFT_EYE + RIGHT_EYE + NOSE + LIPS_OUTER],
    }[kind]
    m = np.zeros(shape[:2], np.float32)
    for idx in parts:
        m = np.maximum(m, fill_polygon(shape, lm[idx]))
    # Parts are small; grow them so the blend reaches skin around the feature, as retouching tools do.
    return morph(m, int(round(face_scale(lm) * rng.uniform(0.15, 0.35))))


def morph(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate (radius > 0) or erode (radius < 0) a mask with an elliptical kernel."""
    if radius == 0:
        return mask
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(radius) + 1, 2 * abs(radius) + 1))
    return (cv2.dilate if radius > 0 else cv2.erode)(mask, k)


def wobble(mask: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Bend a mask's outline with a smooth random displacement (SBI's elastic mask deformation)."""
    h, w = mask.shape
    if amount <= 0:
        return mask
    grid = rng.normal(0, amount, size=(2, 5, 5)).astype(np.float32)
    dx = cv2.resize(grid[0], (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(grid[1], (w, h), interpolation=cv2.INTER_CUBIC)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def soften(mask: np.ndarray, scale: float, rng: np.random.Generator, erode: tuple[float, float] = (-0.25, 0.1),
           blur: tuple[float, float] = (0.03, 0.2), peak: tuple[float, float] = (0.8, 1.0)) -> np.ndarray:
    """Random erosion/dilation, then a random Gaussian feather, both relative to the face scale.

    Returns alpha in [0, 1] whose peak is scaled to a random ``peak`` value (a partly transparent blend is also a
    forgery, but a swapped identity must be opaque or two faces show through each other).
    """
    m = morph(mask, int(round(scale * rng.uniform(*erode))))
    if m.max() == 0:  # eroded away (tiny region): fall back to the hard region
        m = mask
    sigma = scale * rng.uniform(*blur)
    if sigma > 0.3:
        m = cv2.GaussianBlur(m, (0, 0), sigma)
        # blurring a hard mask leaves it at 0.5 on the old edge; sometimes re-harden the inside
        if rng.random() < 0.5:
            m = np.clip(m * rng.uniform(1.0, 1.6), 0, 1)
    peak_now = float(m.max())
    if peak_now <= 0:
        return m
    alpha = m / peak_now * rng.uniform(*peak)
    alpha[alpha < 1.0 / 512] = 0.0  # below half a grey level it changes nothing; keep the mask exact
    return alpha.astype(np.float32)


def blend_mask(shape, landmarks: np.ndarray, rng: np.random.Generator, kinds: list[str],
               weights: list[float] | None = None, **soften_args) -> np.ndarray:
    """A randomised soft blend mask: a region of the face, bent, eroded/dilated and feathered."""
    p = None if weights is None else np.asarray(weights, float) / np.sum(weights)
    kind = kinds[int(rng.choice(len(kinds), p=p))]
    hard = region_mask(shape, landmarks, kind, rng)
    scale = face_scale(landmarks)
    if rng.random() < 0.5:
        hard = (wobble(hard, scale * 0.06, rng) > 0.5).astype(np.float32)
    return soften(hard, scale, rng, **soften_args)


def alpha_blend(source: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``alpha * source + (1 - alpha) * target`` in uint8; where alpha == 0 the target is returned untouched."""
    a = alpha[..., None].astype(np.float32)
    out = source.astype(np.float32) * a + target.astype(np.float32) * (1.0 - a)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    out[alpha == 0] = target[alpha == 0]
    return out


def transfer_colour(source: np.ndarray, target: np.ndarray, region: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Match the source's LAB mean/std inside ``region`` to the target's (Reinhard colour transfer).

    Face swapping tools do this so the pasted skin takes the target's tone; a ``strength`` below 1 leaves a slight
    mismatch, as real tools do.
    """
    sel = region > 0.5
    if sel.sum() < 16:
        return source
    s = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    t = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    s_mu, s_sd = s[sel].mean(0), s[sel].std(0) + 1e-3
    t_mu, t_sd = t[sel].mean(0), t[sel].std(0) + 1e-3
    matched = (s - s_mu) * (t_sd / s_sd) + t_mu
    out = s + strength * (matched - s)
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def jitter_colour(rgb: np.ndarray, rng: np.random.Generator, amount: float = 1.0) -> np.ndarray:
    """Small random brightness, contrast, per-channel shift and saturation change (SBI's source-target jitter)."""
    x = rgb.astype(np.float32)
    x = (x - 128) * rng.uniform(1 - 0.08 * amount, 1 + 0.08 * amount) + 128
    x += rng.uniform(-8, 8, size=3).astype(np.float32) * amount
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(1 - 0.15 * amount, 1 + 0.15 * amount)
    return np.clip(x, 0, 255).astype(np.uint8)


def jitter_frequency(rgb: np.ndarray, rng: np.random.Generator, scale: float, mild: bool = False) -> np.ndarray:
    """Blur, sharpen or down-and-up resample: the frequency mismatch a re-rendered face leaves.

    ``mild`` keeps the change small enough that the face does not look out of focus (for families whose main cue is
    something else, such as a changed expression).
    """
    choice = rng.integers(3)
    if choice == 0:
        sigma = rng.uniform(0.3, 0.7) if mild else rng.uniform(0.4, 1.2) * max(scale / 40, 0.5)
        return cv2.GaussianBlur(rgb, (0, 0), sigma)
    if choice == 1:
        blur = cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.8, 2.0))
        amount = rng.uniform(0.2, 0.5) if mild else rng.uniform(0.3, 1.0)
        return cv2.addWeighted(rgb, 1 + amount, blur, -amount, 0)
    h, w = rgb.shape[:2]
    f = rng.uniform(0.65, 0.9) if mild else rng.uniform(0.4, 0.8)
    small = cv2.resize(rgb, (max(int(w * f), 1), max(int(h * f), 1)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def similarity_from(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, shift) taking src_pts to dst_pts, as a 2x3 matrix."""
    m, _ = cv2.estimateAffinePartial2D(src_pts.astype(np.float32), dst_pts.astype(np.float32), method=cv2.LMEDS)
    if m is None:
        raise ValueError("could not align the faces (degenerate landmarks)")
    return m


def warp_image(rgb: np.ndarray, matrix: np.ndarray, shape) -> np.ndarray:
    return cv2.warpAffine(rgb, matrix, (shape[1], shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def random_affine(center: np.ndarray, scale: float, rng: np.random.Generator, amount: float = 1.0) -> np.ndarray:
    """A slight random similarity about ``center``: a few percent of scale, shift and a degree or two of rotation."""
    angle = rng.uniform(-2.0, 2.0) * amount
    zoom = 1 + rng.uniform(-0.04, 0.04) * amount
    m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), angle, zoom)
    m[:, 2] += rng.uniform(-0.04, 0.04, size=2) * scale * amount
    return m


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return 0.5 * d2 * np.log(d2 + 1e-12)  # r^2 log r, written with r^2


def tps_warp(rgb: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, roi_pad: float = 0.25) -> np.ndarray:
    """Warp the image so content at ``src_pts`` moves to ``dst_pts`` (thin-plate spline through the points).

    Only a box around the points is resampled, and its corners and edge midpoints are pinned, so the warp fades to
    nothing at the box edge. Pass further points with src == dst to pin parts of the face (its outline, the nose).
    The backward map (where each output pixel reads from) is the spline of ``src`` over ``dst``.
    """
    h, w = rgb.shape[:2]
    src = src_pts.astype(np.float64)
    dst = dst_pts.astype(np.float64)
    x0, y0 = np.floor(np.minimum(src.min(0), dst.min(0))).astype(int)
    x1, y1 = np.ceil(np.maximum(src.max(0), dst.max(0))).astype(int)
    pad = int(roi_pad * max(x1 - x0, y1 - y0)) + 2
    x0, y0, x1, y1 = max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, w), min(y1 + pad, h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return rgb.copy()
    xm, ym = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2
    frame = np.array([[x0, y0], [xm, y0], [x1 - 1, y0], [x0, ym], [x1 - 1, ym], [x0, y1 - 1], [xm, y1 - 1],
                      [x1 - 1, y1 - 1]], np.float64)
    src = np.concatenate([src, frame])
    dst = np.concatenate([dst, frame])
    # drop duplicate control points (they make the system singular)
    _, keep = np.unique(np.round(dst, 2), axis=0, return_index=True)
    src, dst = src[np.sort(keep)], dst[np.sort(keep)]
    n = len(dst)
    # centre and scale for a well-conditioned system
    c, sc = dst.mean(0), max(x1 - x0, y1 - y0)
    d = (dst - c) / sc
    a = np.zeros((n + 3, n + 3))
    a[:n, :n] = _tps_kernel(d, d) + 1e-8 * np.eye(n)
    a[:n, n] = 1
    a[:n, n + 1:] = d
    a[n, :n] = 1
    a[n + 1:, :n] = d.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = src - dst
    coef = np.linalg.lstsq(a, rhs, rcond=None)[0]
    # evaluate on a coarse grid and upsample: the field is smooth, and this keeps large faces cheap
    step = max(1, (x1 - x0) // 48)
    gx = np.arange(x0, x1 + step, step, dtype=np.float64)
    gy = np.arange(y0, y1 + step, step, dtype=np.float64)
    g = (np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2) - c) / sc
    field = _tps_kernel(g, d) @ coef[:n] + coef[n] + g @ coef[n + 1:]
    field = field.reshape(len(gy), len(gx), 2).astype(np.float32)
    field = cv2.resize(field, (len(gx) * step, len(gy) * step), interpolation=cv2.INTER_LINEAR)
    field = field[: y1 - y0, : x1 - x0]
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    out = rgb.copy()
    out[y0:y1, x0:x1] = cv2.remap(rgb, xs + field[..., 0], ys + field[..., 1], cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT)
    return out
