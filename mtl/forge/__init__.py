"""The manipulation forge: synthetic forgeries of real face photos with exact masks.

``forge(rgb, family, rng)`` returns the manipulated frame (same size), the blend alpha as the mask (1 = manipulated
pixel; binarise at 0.5 for labels) and the family. Pixels where the mask is 0 are the input's, bit for bit. All
randomness comes from ``rng``, so a seed reproduces a sample. One module per family:

* ``deepfake``  - face re-rendered at 64-128 px (autoencoder-swap look), optionally another identity;
* ``reenact``   - expression changed by landmark-driven warps (Face2Face / NeuralTextures look);
* ``faceswap``  - another person's face fitted by landmarks, colour-corrected (FaceForensics++ FaceSwap look);
* ``selfblend`` - the face blended onto a colour/frequency-jittered, shifted copy of itself (Self-Blended Images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtl.constants import FAMILIES
from mtl.faces import NoFaceError, face_landmarks
from mtl.forge.deepfake import forge_deepfake
from mtl.forge.faceswap import forge_faceswap
from mtl.forge.reenact import forge_reenact
from mtl.forge.selfblend import forge_selfblend

__all__ = ["Forgery", "forge", "NoFaceError", "FAMILIES"]

_FORGERS = {
    "deepfake": forge_deepfake,
    "reenact": forge_reenact,
    "faceswap": forge_faceswap,
    "selfblend": forge_selfblend,
}
assert set(_FORGERS) == set(FAMILIES)


@dataclass
class Forgery:
    image: np.ndarray  # HxWx3 uint8, same size as the input
    mask: np.ndarray  # HxW float32 in [0, 1]: the blend alpha, 0 where pixels are the input's
    family: str  # one of FAMILIES


def _landmarks_of(rgb: np.ndarray, what: str) -> np.ndarray:
    faces = face_landmarks(rgb)
    if not faces:
        raise NoFaceError(f"no face found in the {what} (mediapipe face mesh)")
    return faces[0]


def forge(rgb: np.ndarray, family: str, rng: np.random.Generator, donor: np.ndarray | None = None,
          landmarks: np.ndarray | None = None, donor_landmarks: np.ndarray | None = None) -> Forgery:
    """Manipulate the face in ``rgb`` (the largest one unless ``landmarks`` names one) the way ``family`` does.

    ``donor`` is another person's photo for the identity-changing families (faceswap always, deepfake half the
    time); without one, faceswap uses the mirrored photo. Landmarks are mediapipe face-mesh points (468x2, frame
    coords); they are detected when not given. Raises ``NoFaceError`` (a ``ValueError``) when there is no face.
    """
    if family not in _FORGERS:
        raise ValueError(f"unknown forgery family {family!r}; expected one of {FAMILIES}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    if landmarks is None:
        landmarks = _landmarks_of(rgb, "photo")
    landmarks = np.asarray(landmarks, np.float32)[:468]
    if donor is not None and donor_landmarks is None:
        donor_landmarks = _landmarks_of(donor, "donor photo")
    if donor_landmarks is not None:
        donor_landmarks = np.asarray(donor_landmarks, np.float32)[:468]
    image, mask = _FORGERS[family](rgb, landmarks, rng, donor=donor, donor_landmarks=donor_landmarks)
    return Forgery(image=image, mask=mask.astype(np.float32), family=family)
