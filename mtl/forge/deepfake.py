"""Deepfakes-like forgeries (the FaceForensics++ "Deepfakes" autoencoder swap).

An autoencoder swap decodes the face at low resolution (64-256 px, usually below the face's own), so the pasted face
is smooth, slightly blurred or over-sharpened and a little off in colour, and it is blended in an eroded hull or an
ellipse. Here the face region (the target's own face, or half the time a donor's face fitted onto it) is re-rendered
by shrinking it to such a resolution and back, then colour-mismatched and blended.
"""

from __future__ import annotations

import cv2
import numpy as np

from mtl.forge import blend
from mtl.forge.faceswap import fit_donor

MASK_KINDS = ["inner", "ellipse", "hull"]
MASK_WEIGHTS = [3, 2, 1]


def rerender(rgb: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The frame with the face box passed through a low-resolution 'decoder' (down to 30-80 % and back)."""
    h, w = rgb.shape[:2]
    x0, y0 = landmarks.min(0)
    x1, y1 = landmarks.max(0)
    side = max(x1 - x0, y1 - y0) * 1.25
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bx0, by0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
    bx1, by1 = int(min(cx + side / 2, w)), int(min(cy + side / 2, h))
    face = rgb[by0:by1, bx0:bx1]
    # decoders work at 64-256 px; a big face in a high-resolution photo is rendered at a fraction of its size
    res = int(np.clip(rng.uniform(0.3, 0.8) * max(face.shape[:2]), 64, 256))
    fh, fw = face.shape[:2]
    if max(fh, fw) > res:
        k = res / max(fh, fw)
        small = cv2.resize(face, (max(int(fw * k), 1), max(int(fh * k), 1)), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:  # decoders smooth texture further
            small = cv2.GaussianBlur(small, (0, 0), rng.uniform(0.3, 0.8))
        interp = cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR
        face = cv2.resize(small, (fw, fh), interpolation=interp)
    if rng.random() < 0.4:  # some pipelines sharpen the upsampled face
        blur = cv2.GaussianBlur(face, (0, 0), rng.uniform(1.0, 2.0))
        amt = rng.uniform(0.3, 0.8)
        face = cv2.addWeighted(face, 1 + amt, blur, -amt, 0)
    out = rgb.copy()
    out[by0:by1, bx0:bx1] = face
    return out


def shift_colour(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A slight LAB shift: the decoder's colour never matches the frame exactly."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab += rng.uniform([-5, -3, -3], [5, 3, 3]).astype(np.float32)
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def forge_deepfake(rgb, landmarks, rng, donor=None, donor_landmarks=None):
    """Returns (manipulated frame, alpha)."""
    source = rgb
    region = blend.region_mask(rgb.shape, landmarks, "inner", rng)
    if donor is not None and rng.random() < 0.5:
        source, _ = fit_donor(rgb, landmarks, donor, donor_landmarks, rng)
        source = blend.transfer_colour(source, rgb, region, strength=rng.uniform(0.7, 1.0))
    source = rerender(source, landmarks, rng)
    source = shift_colour(source, rng)
    alpha = blend.blend_mask(rgb.shape, landmarks, rng, MASK_KINDS, MASK_WEIGHTS, 
                             erode=(-0.2, 0.0), peak=(0.9, 1.0))
    return blend.alpha_blend(source, rgb, alpha), alpha
