"""Face2Face-like forgeries (expression reenactment): the same person with a changed expression.

Face2Face and NeuralTextures keep the identity and re-render the face interior with another expression: mouth opened
or closed, a smile, eyes and brows moved. Here a thin-plate spline driven by face-mesh landmarks moves the jaw, lips,
mouth corners, eyelids and brows while the face outline and nose stay pinned (a warp cannot draw a mouth interior, so
mouths open only slightly); the re-rendered face is slightly smoothed, and it is blended back over the face interior.
"""

from __future__ import annotations

import numpy as np

from mtl.forge import blend

LOWER_LIP = [146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324]
UPPER_LIP = [185, 40, 39, 37, 0, 267, 269, 270, 409, 191, 80, 81, 82, 13, 312, 311, 310, 415]
CORNERS = {61: -1, 78: -1, 291: 1, 308: 1}  # mouth corners and which way is "outward" (image x)
CHIN = {152: 1.0, 148: 0.9, 377: 0.9, 176: 0.8, 400: 0.8, 149: 0.6, 378: 0.6, 150: 0.4, 379: 0.4, 136: 0.2, 365: 0.2}
PINNED = [p for p in blend.FACE_OVAL if p not in CHIN] + [1, 4, 6, 168, 197, 195, 98, 327]


def _move_expression(lm: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[int], set[str]]:
    """Target landmark positions for a new expression; returns (moved, moved indices, parts moved)."""
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
    if choices[0]:  # jaw: open a closed mouth a little, or close an open one part way
        # opening an already open mouth would stretch the teeth, so only closed mouths open
        if gap > 0.08 * s and (gap > 0.15 * s or rng.random() < 0.5):
            delta = -rng.uniform(0.25, 0.55) * gap  # further and the teeth fold into a dark seam
        else:
            # a warp cannot draw a mouth interior, so a closed mouth only parts slightly
            delta = rng.uniform(0.03, 0.1) * s if gap <= 0.08 * s else rng.uniform(0.02, 0.05) * s
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
    return moved, idx, parts


def forge_reenact(rgb, landmarks, rng, donor=None, donor_landmarks=None):
    """Returns (manipulated frame, alpha)."""
    moved, idx, parts = _move_expression(landmarks, rng)
    src_pts = np.concatenate([landmarks[idx], landmarks[PINNED]])
    dst_pts = np.concatenate([moved[idx], landmarks[PINNED]])
    source = blend.tps_warp(rgb, src_pts, dst_pts)
    if rng.random() < 0.6:  # the re-rendered face is a little smoother or sharper than the frame
        source = blend.jitter_frequency(source, rng, blend.face_scale(landmarks), mild=True)
    if rng.random() < 0.5:
        source = blend.jitter_colour(source, rng, amount=0.3)
    # the blend must cover everything the warp moved: take the region on both the old and the new landmarks
    kinds = ["inner", "ellipse", "hull"] if "eyes" in parts else ["inner", "ellipse", "lower"]
    kind = kinds[int(rng.integers(len(kinds)))]
    hard = np.maximum(blend.region_mask(rgb.shape, landmarks, kind, rng),
                      blend.region_mask(rgb.shape, moved, kind, rng))
    alpha = blend.soften(hard, blend.face_scale(landmarks), rng, erode=(0.0, 0.15))
    return blend.alpha_blend(source, rgb, alpha), alpha
