"""FaceSwap-like forgeries (FaceForensics++ "FaceSwap"): another person's face fitted onto the target.

The graphics tool fits a face model to the target's landmarks, renders the donor's texture on it, corrects colour and
blends inside the landmark hull. Here: align the donor by a similarity on stable points, then bend it with a thin-plate
spline so its landmarks land on the target's (the donor's texture on the target's face shape), transfer the target's
skin colour in LAB, and blend through a randomised hull mask.
"""

from __future__ import annotations

import numpy as np

from mtl.forge import blend

MASK_KINDS = ["inner", "hull", "ellipse"]
MASK_WEIGHTS = [3, 2, 1]
# landmarks the donor face is bent onto: outline, brows, eye corners and lids, nose, outer lip. Inner-lip points are
# left out: on a closed mouth they coincide, and forcing an open donor mouth onto them folds the lips into a wave.
FIT_POINTS = sorted(set(blend.JAW[::2] + blend.LEFT_BROW[::3] + blend.RIGHT_BROW[::3]
                        + [33, 133, 362, 263, 159, 145, 386, 374, 1, 4, 98, 327, 168, 61, 291, 0, 17]))


def facing_alike(landmarks: np.ndarray, donor: np.ndarray, donor_landmarks: np.ndarray):
    """The donor, mirrored when it looks the other way than the target (a swap across head turns smears the face)."""
    t, d = blend.yaw(landmarks), blend.yaw(donor_landmarks)
    if abs(t - d) > 0.1 and abs(t + d) < abs(t - d):
        try:
            return mirrored(donor, donor_landmarks)
        except ValueError:
            pass
    return donor, donor_landmarks


def fit_donor(rgb: np.ndarray, landmarks: np.ndarray, donor: np.ndarray, donor_landmarks: np.ndarray,
              rng: np.random.Generator, bend: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The donor face moved onto the target's frame (and its landmarks there)."""
    donor, donor_landmarks = facing_alike(landmarks, donor, donor_landmarks)
    m = blend.similarity_from(donor_landmarks[blend.ALIGN_POINTS], landmarks[blend.ALIGN_POINTS])
    moved = blend.warp_image(donor, m, rgb.shape)
    moved_lm = blend.transform_points(donor_landmarks, m)
    if bend:
        # small random slack in the fit, as a real landmark fit is never exact
        jitter = rng.normal(0, 0.01 * blend.face_scale(landmarks), size=(len(FIT_POINTS), 2))
        moved = blend.tps_warp(moved, moved_lm[FIT_POINTS], landmarks[FIT_POINTS] + jitter)
        moved_lm = landmarks.copy()
    return moved, moved_lm


def forge_faceswap(rgb, landmarks, rng, donor=None, donor_landmarks=None):
    """Returns (manipulated frame, alpha). Without a donor the mirrored target stands in (a weak identity change)."""
    if donor is None:
        donor, donor_landmarks = mirrored(rgb, landmarks)
    source, _ = fit_donor(rgb, landmarks, donor, donor_landmarks, rng)
    region = blend.region_mask(rgb.shape, landmarks, "inner", rng)
    source = blend.transfer_colour(source, rgb, region, strength=rng.uniform(0.85, 1.0))
    if rng.random() < 0.3:
        source = blend.jitter_frequency(source, rng, blend.face_scale(landmarks), mild=True)
    alpha = blend.blend_mask(rgb.shape, landmarks, rng, MASK_KINDS, MASK_WEIGHTS, 
                             erode=(-0.25, 0.0), peak=(0.95, 1.0))
    return blend.alpha_blend(source, rgb, alpha), alpha


def mirrored(rgb: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo flipped left-right with its own landmarks (a stand-in donor when no other person is at hand)."""
    from mtl.faces import NoFaceError, face_landmarks

    flipped = np.ascontiguousarray(rgb[:, ::-1])
    faces = face_landmarks(flipped)
    if not faces:
        raise NoFaceError("no face found in the mirrored photo used as donor")
    # the mirror image of the target face: the set whose centre is nearest the mirrored centre
    cx = rgb.shape[1] - 1 - landmarks[:, 0].mean()
    return flipped, min(faces, key=lambda p: abs(p[:, 0].mean() - cx))
