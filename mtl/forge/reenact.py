"""Face2Face-like forgeries (expression reenactment): the same person with a changed expression.

Face2Face and NeuralTextures keep the identity and re-render the face interior with another expression: mouth opened
or closed, a smile, eyes and brows moved. Here a thin-plate spline driven by face-mesh landmarks moves the jaw, lips,
mouth corners, eyelids and brows while the face outline and nose stay pinned; a newly opened mouth gets a dark
interior; the re-rendered face is slightly smoothed, and it is blended back over the face interior.
"""

from __future__ import annotations

import cv2
import numpy as np

from mtl.forge import blend

LOWER_LIP = [146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324]
UPPER_LIP = [185, 40, 39, 37, 0, 267, 269, 270, 409, 191, 80, 81, 82, 13, 312, 311, 310, 415]
CORNERS = {61: -1, 78: -1, 291: 1, 308: 1}  # mouth corners and which way is "outward" (image x)
CHIN = {152: 1.0, 148: 0.9, 377: 0.9, 176: 0.8, 400: 0.8, 149: 0.6, 378: 0.6, 150: 0.4, 379: 0.4, 136: 0.2, 365: 0.2}
PINNED = [p for p in blend.FACE_OVAL if p not in CHIN] + [1, 4, 6, 168, 197, 195, 98, 327]


def _move_expression(lm: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[int], bool, set[str]]:
    """Target landmark positions for a new expression; returns (moved, moved indices, mouth opened, parts moved)."""
    s = blend.face_scale(lm)
    moved = lm.copy()
    # direction "down the face" (the face may be tilted)
    down = lm[152] - lm[168]
    down = down / (np.linalg.norm(down) + 1e-6)
    right = np.array([down[1], -down[0]]) * -1  # perpendicular, pointing to image right for an upright face
    parts = set()
    gap = float(np.dot(lm[14] - lm[13], down))  # current mouth opening
    choices = rng.random(4) < np.array([0.7, 0.5, 0.4, 0.4])
    if not choices.any():
        choices[0] = True
    opened = False
    if choices[0]:  # jaw: open or close the mouth
        if gap > 0.15 * s and rng.random() < 0.5:
            delta = -rng.uniform(0.5, 0.9) * gap
        else:
            delta = rng.uniform(0.06, 0.22) * s
            opened = delta > 0.1 * s and gap < 0.08 * s
        for i in LOWER_LIP:
            moved[i] += down * delta
        for i, wgt in CHIN.items():
            moved[i] += down * delta * 0.7 * wgt
        for i in UPPER_LIP:
            moved[i] -= down * delta * 0.1
        parts.add("mouth")
    if choices[1]:  # smile / pout: mouth corners out-and-up or in
        out = rng.uniform(-0.05, 0.12) * s
        up = rng.uniform(0.0, 0.08) * s * (out > 0)
        for i, side in CORNERS.items():
            moved[i] += right * side * out - down * up
        parts.add("mouth")
    if choices[2]:  # eyes: squint or widen (upper lids along the face's vertical)
        eye_open = float(np.dot(lm[145] - lm[159], down))
        d = rng.uniform(-0.2, 0.45) * eye_open
        for i in blend.UPPER_EYELIDS:
            moved[i] += down * d
        parts.add("eyes")
    if choices[3]:  # brows up or down
        d = rng.uniform(-0.12, 0.08) * s
        for i in blend.LEFT_BROW + blend.RIGHT_BROW:
            moved[i] += down * d
        parts.add("eyes")
    idx = sorted(set(LOWER_LIP + UPPER_LIP + list(CORNERS) + list(CHIN) + blend.UPPER_EYELIDS + blend.LOWER_EYELIDS
                     + blend.LEFT_BROW + blend.RIGHT_BROW + [33, 133, 362, 263]))
    return moved, idx, opened, parts


def _paint_mouth_interior(rgb: np.ndarray, lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A newly opened mouth shows its dark interior (and a hint of teeth), not stretched lip."""
    inner = blend.fill_polygon(rgb.shape, lm[blend.LIPS_INNER], hull=False)
    if inner.sum() < 4:
        return rgb
    lips = blend.fill_polygon(rgb.shape, lm[blend.LIPS_OUTER], hull=False) > 0
    base = rgb[lips].mean(0) if lips.any() else np.array([120, 60, 60])
    dark = np.clip(base * rng.uniform(0.15, 0.35), 0, 255)
    interior = np.empty_like(rgb, dtype=np.float32)
    interior[:] = dark
    if rng.random() < 0.5:  # upper teeth: a pale band under the upper lip
        teeth = np.zeros(rgb.shape[:2], np.float32)
        top = lm[blend.LIPS_INNER]
        upper = top[np.argsort(top[:, 1])[: len(top) // 2]]
        height = max(1, int(0.3 * (lm[14, 1] - lm[13, 1])))
        cv2.fillPoly(teeth, [np.round(np.concatenate([upper, upper[::-1] + [0, height]])).astype(np.int32)], 1)
        colour = np.array([200, 190, 175], np.float32) * rng.uniform(0.7, 1.0)
        interior = interior * (1 - teeth[..., None]) + colour * teeth[..., None]
    a = cv2.GaussianBlur(inner, (0, 0), max(0.6, 0.04 * blend.face_scale(lm)))[..., None]
    return np.clip(rgb * (1 - a) + interior * a, 0, 255).astype(np.uint8)


def forge_reenact(rgb, landmarks, rng, donor=None, donor_landmarks=None):
    """Returns (manipulated frame, alpha)."""
    moved, idx, opened, parts = _move_expression(landmarks, rng)
    src_pts = np.concatenate([landmarks[idx], landmarks[PINNED]])
    dst_pts = np.concatenate([moved[idx], landmarks[PINNED]])
    source = blend.tps_warp(rgb, src_pts, dst_pts)
    if opened:
        source = _paint_mouth_interior(source, moved, rng)
    if rng.random() < 0.6:  # the re-rendered face is a little smoother or sharper than the frame
        source = blend.jitter_frequency(source, rng, blend.face_scale(landmarks))
    if rng.random() < 0.5:
        source = blend.jitter_colour(source, rng, amount=0.3)
    # the blend must cover everything the warp moved: take the region on both the old and the new landmarks
    kinds = ["inner", "ellipse", "hull"] if "eyes" in parts else ["inner", "ellipse", "lower"]
    kind = kinds[int(rng.integers(len(kinds)))]
    hard = np.maximum(blend.region_mask(rgb.shape, landmarks, kind, rng),
                      blend.region_mask(rgb.shape, moved, kind, rng))
    alpha = blend.soften(hard, blend.face_scale(landmarks), rng, erode=(0.0, 0.15))
    return blend.alpha_blend(source, rgb, alpha), alpha
