"""Finding faces and cutting the paper's square crops out of frames.

Everything that turns a frame into model input goes through here, at inference *and* when building training data, so
the framing of a face can never tell real from fake.

Crop geometry (pinned by tests):

* The paper cropped a square centred on the ground-truth mask's bounding box with side 1.3 x the box height. At
  inference there is no mask, so the mediapipe detector box stands in for it, and ``square_around`` uses
  side = ``scale * max(w, h)`` (``max`` so that a box squeezed by head pose still gives the whole face). Measured on
  31 LFW faces, the detector box is about 1.2x (1.0-1.3x) the brows-to-chin landmark height that a FaceForensics++
  mask spans, and centred ~0.1 of that height higher: our crops show a little more context than the paper's. Training
  data from ``train.build_dataset`` uses this same function, so the model sees the framing the app gives it.
* A square is ``(cx, cy, side)`` in continuous frame coordinates, where pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``.
  ``crop_square`` resamples it onto a ``size x size`` grid; where it leaves the frame the crop is padded with black
  (zeros), for images and masks alike.
* ``paste_mask`` is the exact inverse mapping, so a mask predicted on the crop lands on the right frame pixels.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from mtl.constants import CROP_SCALE, FACE_SIZE

# Detection runs on at most this many pixels on the long side; larger frames are downscaled first (faster, and the
# mediapipe models work on 128-192 px inputs anyway).
MAX_DETECT_SIDE = 1920


@dataclass(frozen=True)
class FaceBox:
    """A detected face in frame pixel coordinates."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    keypoints: np.ndarray | None = None  # Kx2 frame coords (mediapipe: eyes, nose tip, mouth, ears)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


@dataclass(frozen=True)
class FaceCrop:
    """A face cut out of a frame: the model's input and the way back to the frame."""

    image: np.ndarray  # size x size x 3 uint8 RGB
    box: FaceBox
    square: tuple[float, float, float]  # (cx, cy, side) in frame coords
    size: int = FACE_SIZE


class NoFaceError(ValueError):
    """No face was found where one was needed."""


# --- mediapipe models, created once per process -------------------------------------------------------------------
# mediapipe graphs are not safe to call from several threads at once, and creating one costs ~50 ms, so each process
# keeps one of each behind a lock. A forked child (multiprocessing, DataLoader workers) must not touch its parent's
# graphs - their threads did not survive the fork and the call would hang - so the cache remembers its process.
_lock = threading.Lock()
_models: dict[str, object] = {}
_models_pid: int | None = None


def _process_lock() -> threading.Lock:
    """This process's lock, guarding both creating and calling the models."""
    global _models_pid, _lock
    if _models_pid != os.getpid():
        _models.clear()  # inherited through fork: unusable here (and never closed, that could hang too)
        _lock = threading.Lock()
        _models_pid = os.getpid()
    return _lock


def _cached(name: str, make):
    if name not in _models:
        _models[name] = make()
    return _models[name]


def _detector(model_selection: int):
    import mediapipe as mp

    return _cached(f"detector{model_selection}", lambda: mp.solutions.face_detection.FaceDetection(
        model_selection=model_selection, min_detection_confidence=0.2))


def _face_mesh():
    import mediapipe as mp

    return _cached("mesh", lambda: mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=8, refine_landmarks=False, min_detection_confidence=0.3))


def _as_rgb_uint8(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


def _downscaled(rgb: np.ndarray, max_side: int = MAX_DETECT_SIDE) -> tuple[np.ndarray, float]:
    """The image shrunk so its long side is at most ``max_side``, and the factor that maps back to the frame."""
    h, w = rgb.shape[:2]
    factor = max(h, w) / max_side
    if factor <= 1:
        return rgb, 1.0
    small = cv2.resize(rgb, (round(w / factor), round(h / factor)), interpolation=cv2.INTER_AREA)
    return small, w / small.shape[1]


def _run_detector(rgb: np.ndarray, model_selection: int, min_score: float) -> list[FaceBox]:
    h, w = rgb.shape[:2]
    with _process_lock():
        result = _detector(model_selection).process(rgb)
    boxes = []
    for det in result.detections or []:
        score = float(det.score[0])
        if score < min_score:
            continue
        rel = det.location_data.relative_bounding_box
        x0, y0 = rel.xmin * w, rel.ymin * h
        kps = np.array([[k.x * w, k.y * h] for k in det.location_data.relative_keypoints], np.float32)
        boxes.append(FaceBox(x0, y0, x0 + rel.width * w, y0 + rel.height * h, score, kps if len(kps) else None))
    return boxes


def _scaled(box: FaceBox, f: float) -> FaceBox:
    kps = None if box.keypoints is None else box.keypoints * f
    return FaceBox(box.x0 * f, box.y0 * f, box.x1 * f, box.y1 * f, box.score, kps)


def detect_faces(rgb: np.ndarray, min_score: float = 0.5) -> list[FaceBox]:
    """Every face in an RGB frame, highest score first.

    The full-range model (faces up to ~5 m) runs first; when it finds nothing the short-range model gets a go, because
    it is better at close-ups that fill the frame (selfies, already-cropped faces).
    """
    rgb = _as_rgb_uint8(rgb)
    small, f = _downscaled(rgb)
    boxes = _run_detector(small, 1, min_score) or _run_detector(small, 0, min_score)
    boxes = [_scaled(b, f) for b in boxes] if f != 1.0 else boxes
    return sorted(boxes, key=lambda b: -b.score)


def face_landmarks(rgb: np.ndarray) -> list[np.ndarray]:
    """mediapipe face mesh landmarks (468x2 float32, frame pixel coords) for each face found, largest face first."""
    rgb = _as_rgb_uint8(rgb)
    small, f = _downscaled(rgb)
    h, w = small.shape[:2]
    with _process_lock():
        result = _face_mesh().process(small)
    faces = []
    for lms in result.multi_face_landmarks or []:
        pts = np.array([[p.x * w, p.y * h] for p in lms.landmark], np.float32) * f
        faces.append(pts)
    return sorted(faces, key=lambda p: -float(np.ptp(p[:, 0]) * np.ptp(p[:, 1])))


def landmarks_in_box(faces: list[np.ndarray], box: FaceBox) -> np.ndarray | None:
    """The landmark set that belongs to ``box`` (its centroid inside the box, nearest the box centre), if any."""
    cx, cy = box.center
    best, best_d = None, np.inf
    for pts in faces:
        mx, my = pts.mean(axis=0)
        if box.x0 <= mx <= box.x1 and box.y0 <= my <= box.y1:
            d = (mx - cx) ** 2 + (my - cy) ** 2
            if d < best_d:
                best, best_d = pts, d
    return best


# --- crop geometry ---------------------------------------------------------------------------------------------------


def square_around(box: FaceBox, scale: float = CROP_SCALE) -> tuple[float, float, float]:
    """The crop square ``(cx, cy, side)``: centred on the box, side = ``scale * max(width, height)``."""
    cx, cy = box.center
    return float(cx), float(cy), float(scale * max(box.width, box.height))


def _crop_matrix(square, size: int) -> np.ndarray:
    """2x3 affine taking crop pixel indices (u, v) to frame pixel indices (x, y)."""
    cx, cy, side = square
    s = side / size
    # crop pixel u has its centre at u + 0.5 crop units = cx - side/2 + (u + 0.5) * s in frame units,
    # and frame pixel index = continuous coordinate - 0.5.
    tx = cx - side / 2 + 0.5 * s - 0.5
    ty = cy - side / 2 + 0.5 * s - 0.5
    return np.array([[s, 0, tx], [0, s, ty]], np.float64)


def crop_square(rgb: np.ndarray, square, size: int = FACE_SIZE) -> np.ndarray:
    """Resample the square region of an image (HxWx3) or mask (HxW) to ``size x size``; black outside the frame."""
    cx, cy, side = (float(v) for v in square)
    if side <= 0:
        raise ValueError(f"crop square must have a positive side, got {side}")
    src = rgb
    s = side / size
    # Shrinking by more than ~1.5x with bilinear sampling aliases; blur just the region we read first.
    if s > 1.5:
        h, w = rgb.shape[:2]
        x0, y0 = max(int(cx - side / 2) - 4, 0), max(int(cy - side / 2) - 4, 0)
        x1, y1 = min(int(cx + side / 2) + 5, w), min(int(cy + side / 2) + 5, h)
        if x1 > x0 and y1 > y0:
            src = np.zeros_like(rgb)
            sigma = 0.45 * s
            src[y0:y1, x0:x1] = cv2.GaussianBlur(rgb[y0:y1, x0:x1], (0, 0), sigma)
    m = _crop_matrix((cx, cy, side), size)
    return cv2.warpAffine(
        src, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def crop_face(rgb: np.ndarray, box: FaceBox, size: int = FACE_SIZE, scale: float = CROP_SCALE) -> FaceCrop:
    """The paper's crop of one detected face."""
    square = square_around(box, scale)
    return FaceCrop(crop_square(rgb, square, size), box, square, size)


def paste_mask(mask: np.ndarray, crop: FaceCrop, frame_shape: tuple[int, int]) -> np.ndarray:
    """A ``size x size`` mask in [0, 1] on the crop, as an HxW float32 mask in frame coords (0 outside the square)."""
    h, w = frame_shape[:2]
    m = _crop_matrix(crop.square, mask.shape[0])
    out = cv2.warpAffine(
        mask.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    return np.clip(out, 0.0, 1.0)
