"""Self-blended images (Shiohara & Yamasaki, CVPR 2022): the face blended onto itself.

The source is the same photo with a colour shift, a frequency change (blur, sharpening or resampling) and a slight
affine shift. Nothing about identity or expression changes, so the only evidence left is what every blend leaves:
the boundary, and colour/texture statistics that differ inside it. That is the cue that generalises across methods.
"""

from __future__ import annotations

import numpy as np

from mtl.forge import blend

# region shapes and how often to draw them: mostly whole-face masks, sometimes a part (retouched mouth, eyes)
MASK_KINDS = ["hull", "inner", "ellipse", "center", "lower", "mouth", "eyes", "nose"]
MASK_WEIGHTS = [3, 3, 2, 1, 1, 1, 1, 0.5]


def make_source(rgb: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, colour: bool = True,
                frequency: bool = True, shift: bool | None = None) -> np.ndarray:
    """The face to blend in: a colour change and a frequency change, always both, as SBI's source transforms do
    (a colour ``Compose`` and a ``OneOf(downscale, sharpen)``, each with p=1), then in 70% of cases a slight shift
    (``shift`` None; True or False forces it). ``train.diagnose selfblend`` turns the ingredients off one at a time.

    Until this was fixed, 40% of the self-blends got a colour change alone. Those are a soft tint under a feathered
    mask; the shipped detector scored them at chance (AUC 0.50 in ``train.diagnose selfblend``), and SBI never makes
    them.
    """
    scale = blend.face_scale(landmarks)
    source = rgb
    if colour:
        source = blend.jitter_colour(source, rng, amount=rng.uniform(0.5, 1.2))
    if frequency:
        source = blend.jitter_frequency(source, rng, scale)
    if shift is None:
        shift = rng.random() < 0.7
    if shift:
        m = blend.random_affine(landmarks.mean(0), scale, rng, amount=rng.uniform(0.3, 1.0))
        source = blend.warp_image(source, m, rgb.shape)
    return source


def forge_selfblend(rgb, landmarks, rng, donor=None, donor_landmarks=None):
    """Returns (manipulated frame, alpha)."""
    source = make_source(rgb, landmarks, rng)
    alpha = blend.blend_mask(rgb.shape, landmarks, rng, MASK_KINDS, MASK_WEIGHTS)
    return blend.alpha_blend(source, rgb, alpha), alpha
