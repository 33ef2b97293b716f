"""The one path from a photo or a clip to verdicts, masks and method guesses, shared by the app, the CLI and tests.

    from mtl.pipeline import analyze_image, analyze_video
    result = analyze_image("photo.jpg")            # path, PIL image or numpy array
    result.verdict, result.p_fake, result.faces[0].box, result.mask
    video = analyze_video("clip.mp4", out_path="annotated.mp4")
    video.verdict, video.p_fake, [f.p_fake for f in video.frames]

Results are plain dataclasses (numpy arrays and floats, no tensors). Inputs the pipeline cannot use raise
``InputError`` with a message written for the person who supplied the file.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import render
from .methods import MethodGuess, combine, guess_method
from .video import DEFAULT_MAX_DURATION_S, InputError, VideoWriter, iter_frames, prefetch, probe

__all__ = [
    "InputError", "FaceResult", "ImageAnalysis", "FrameResult", "FaceTrack", "VideoAnalysis",
    "analyze_image", "analyze_video", "load_image", "get_model", "verdict_text", "MAX_PIXELS",
]

MAX_PIXELS = 50_000_000  # 50 megapixels: refused before decoding (the header gives the size)
MIN_SIDE = 20  # smaller images cannot hold a face the detector can find
MIN_FACE_SCORE = 0.5
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".jfif", ".ppm", ".pgm"}
VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}


# --- the model, loaded once per process --------------------------------------------------------------------------
_models: dict[str, Any] = {}
_model_lock = threading.Lock()


_threads_set = False


def _configure_threads() -> None:
    """One intra-op thread for the model by default (env MTL_TORCH_THREADS overrides; 0 leaves torch's default).

    The network is small, so a batch gains little from a second OpenMP thread, while the video pipeline already
    keeps the other core busy decoding and encoding. And when anything else runs on the machine, OpenMP's barrier
    waits make 2-thread inference collapse: measured on the 2-core machine beside a training job, one face took
    536 ms with 2 threads and 6.5 ms with 1."""
    global _threads_set
    if _threads_set:
        return
    _threads_set = True
    want = int(os.environ.get("MTL_TORCH_THREADS", "1"))
    if want > 0:
        import torch

        if torch.get_num_threads() != want:
            torch.set_num_threads(want)


def get_model(model=None):
    """The model to use: an object with ``predict`` is returned as is; a spec (local dir, Hub id) or None (env
    ``MTL_MODEL``, else the shipped checkpoint) is loaded once and cached. The first call also sets torch's thread
    count for inference (see ``_configure_threads``)."""
    _configure_threads()
    if model is not None and hasattr(model, "predict"):
        return model
    spec = model if model is not None else (os.environ.get("MTL_MODEL") or None)
    key = str(spec)
    with _model_lock:
        if key not in _models:
            from . import load_model

            _models[key] = load_model(spec)
        return _models[key]


def model_name(model) -> str:
    return str(getattr(model, "name", None) or type(model).__name__)


def _verdict_fields(verdict: str, p_fake: float | None, method) -> dict:
    """The leading fields of an image's or a video's ``to_dict``: verdict, p_fake and the method guess."""
    return {
        "verdict": verdict,
        "p_fake": None if p_fake is None else round(p_fake, 4),
        "method": None if method is None else {k: round(v, 4) for k, v in method.probs.items()},
        "method_source": None if method is None else method.source,
    }


def verdict_text(p_fake: float | None, is_fake: bool | None) -> str:
    """Honest wording: the model's calibrated probability and which side of its threshold it falls."""
    if p_fake is None or is_fake is None:
        return "no face found"
    return f"likely manipulated (p={p_fake:.2f})" if is_fake else f"likely real (p={p_fake:.2f})"


# --- reading images ------------------------------------------------------------------------------------------------
def _too_big(w: int, h: int, limit: int) -> InputError:
    return InputError(f"the image is {w}x{h} pixels ({w * h / 1e6:.0f} MP); the limit is {limit / 1e6:.0f} MP. "
                      "Please upload a smaller version")


def _pil_to_rgb(im) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        im.seek(0)  # animated GIF / multi-page TIFF: the first frame
    except (EOFError, AttributeError):
        pass
    try:
        im = ImageOps.exif_transpose(im)  # phone photos stand upright as their owner saw them
    except Exception:
        pass
    mode = im.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _array_to_rgb(np.asarray(im))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode != "RGB":
        im = im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return np.asarray(im)


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"expected an image array of shape HxW, HxWx3 or HxWx4, got {a.shape}")
    if a.size == 0:
        raise InputError("the image is empty (0 pixels)")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        finite = np.nan_to_num(a.astype(np.float32))
        scale = 255.0 if finite.max(initial=0) <= 1.0 else 1.0
        a = np.clip(finite * scale + 0.5, 0, 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        top = int(a.max(initial=0))
        if top > 255:  # 16-bit (or wider) samples
            a = (a.astype(np.float64) * (255.0 / (65535 if top <= 65535 else top)) + 0.5).astype(np.uint8)
        else:
            a = np.clip(a, 0, 255).astype(np.uint8)
    else:
        raise InputError(f"unsupported image data type {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.shape[2] == 4:
        alpha = a[..., 3:].astype(np.float32) / 255.0
        a = (a[..., :3].astype(np.float32) * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def load_image(image, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any supported image input -> HxWx3 uint8 RGB. Raises InputError with a readable reason otherwise."""
    from PIL import Image, UnidentifiedImageError

    if image is None:
        raise InputError("no image was given")
    if isinstance(image, np.ndarray):
        if image.ndim >= 2 and image.shape[0] * image.shape[1] > max_pixels:
            raise _too_big(image.shape[1], image.shape[0], max_pixels)
        return _array_to_rgb(image)
    if isinstance(image, Image.Image):
        if image.width * image.height > max_pixels:
            raise _too_big(image.width, image.height, max_pixels)
        return _pil_to_rgb(image)
    if isinstance(image, (bytes, bytearray)):
        name, source = "the upload", io.BytesIO(image)
        if not image:
            raise InputError("the file is empty")
    elif isinstance(image, (str, os.PathLike)):
        p = Path(image)
        name, source = p.name, p
        if not p.exists():
            raise InputError(f"{name}: file not found")
        if p.is_dir():
            raise InputError(f"{name}: is a folder, not an image")
        if p.stat().st_size == 0:
            raise InputError(f"{name}: the file is empty")
    else:
        raise InputError(f"cannot read an image from a {type(image).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)  # reads the header only
    except Image.DecompressionBombError as e:  # PIL's own, larger, limit: report ours
        m = re.search(r"\((\d+) pixels\)", str(e))
        px = int(m.group(1)) if m else 0
        raise InputError(f"{name}: the image has {px / 1e6:.0f} MP; the limit is {max_pixels / 1e6:.0f} MP. "
                         "Please upload a smaller version") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{name}: not an image this app can read (supported: JPEG, PNG, WebP, BMP, TIFF, GIF)") from e
    with im:  # closes the file on every path (a refused or corrupt file, a GIF's other frames)
        w, h = im.size
        if w * h > max_pixels:
            raise InputError(f"{name}: " + str(_too_big(w, h, max_pixels)))
        if w == 0 or h == 0:
            raise InputError(f"{name}: the image is empty (0 pixels)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                return _pil_to_rgb(im)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise InputError(f"{name}: the image data is truncated or corrupt ({e})") from e


# --- faces ---------------------------------------------------------------------------------------------------------
DETECT_SIDE = 640  # mediapipe's detector sees a 192x192 (full-range) input anyway: a smaller copy loses nothing


def find_faces(rgb: np.ndarray, min_score: float = MIN_FACE_SCORE) -> list:
    """mtl.faces.detect_faces on a copy at most DETECT_SIDE px on its long side (3x faster on 720p frames), boxes
    and keypoints mapped back to the frame."""
    import cv2

    from .faces import FaceBox, detect_faces

    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        return []
    f = max(h, w) / DETECT_SIDE
    if f <= 1.0:
        return detect_faces(rgb, min_score=min_score)
    small = cv2.resize(rgb, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
    fx, fy = w / small.shape[1], h / small.shape[0]
    out = []
    for b in detect_faces(small, min_score=min_score):
        kp = None if b.keypoints is None else (np.asarray(b.keypoints, np.float32) * np.float32([fx, fy]))
        out.append(FaceBox(b.x0 * fx, b.y0 * fy, b.x1 * fx, b.y1 * fy, b.score, kp))
    return out


# --- results -------------------------------------------------------------------------------------------------------
@dataclass
class FaceResult:
    """One face: where it is, what the model says, where it was changed and how."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    score: float  # detector confidence
    p_fake: float  # calibrated probability that the face is manipulated
    is_fake: bool  # p_fake > the model's threshold
    activations: tuple[float, float]  # mean |latent| of the fake and the real half (the paper's raw score)
    method: MethodGuess | None  # None for faces judged real
    crop: np.ndarray = field(repr=False)  # 256x256x3 uint8, what the model saw
    crop_mask: np.ndarray = field(repr=False)  # 256x256 float32 in [0, 1], on the crop
    square: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (cx, cy, side) of the crop in frame pixels

    @property
    def verdict(self) -> str:
        return "fake" if self.is_fake else "real"

    @property
    def label(self) -> str:
        return render.face_label(self.p_fake, self.is_fake)

    def crop_overlay(self) -> np.ndarray:
        """The crop with its mask painted on (for a gallery); the plain crop for a face judged real."""
        if not self.is_fake:
            return self.crop.copy()
        return render.overlay_mask(self.crop, self.crop_mask, contour=True)

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "p_fake": round(self.p_fake, 4),
            "method": None if self.method is None else {k: round(v, 4) for k, v in self.method.probs.items()},
        }


def _most_suspicious(faces: list[FaceResult]) -> FaceResult | None:
    return max(faces, key=lambda f: f.p_fake) if faces else None


@dataclass
class ImageAnalysis:
    image: np.ndarray = field(repr=False)  # HxWx3 uint8 RGB, as analysed
    faces: list[FaceResult]  # highest detector score first
    mask: np.ndarray = field(repr=False)  # HxW float32, max over faces judged manipulated of the per-pixel probability
    model: str
    threshold: float
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """'fake' when any face is judged manipulated, 'real' when none is, 'no_face' when none was found."""
        if not self.faces:
            return "no_face"
        return "fake" if any(f.is_fake for f in self.faces) else "real"

    @property
    def p_fake(self) -> float | None:
        """The most suspicious face's probability (None without faces)."""
        top = _most_suspicious(self.faces)
        return None if top is None else top.p_fake

    @property
    def method(self) -> MethodGuess | None:
        top = _most_suspicious(self.faces)
        return None if top is None else top.method

    @property
    def summary(self) -> str:
        if not self.faces:
            return "no face found" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        top = _most_suspicious(self.faces)
        n = len(self.faces)
        text = verdict_text(top.p_fake, top.is_fake)
        return text if n == 1 else f"{text}, the most suspicious of {n} faces"

    def annotated(self) -> np.ndarray:
        """The image with highlighted regions and labelled face boxes."""
        out = render.overlay_mask(self.image, self.mask)
        return render.draw_boxes(out, [render.BoxLabel(f.box, f.label, f.is_fake) for f in self.faces], inplace=True)

    def to_dict(self) -> dict:
        return {
            **_verdict_fields(self.verdict, self.p_fake, self.method),
            "faces": [f.to_dict() for f in self.faces],
            "model": self.model,
            "threshold": self.threshold,
            "notes": list(self.notes),
        }


# --- images --------------------------------------------------------------------------------------------------------
def default_batch_size() -> int:
    """Faces per pass of the model: how many a video gathers before running it, and the most a photo sends at once.

    Where the fast path runs in fp32 (a CPU without native bf16), small passes keep a layer's activations in the
    caches: on 2 cores of an AVX2-only AMD EPYC, passes of 2 faces ran the shipped ensemble's videos at 19.8 / 19.6
    frames/s against 11.7 / 12.3 with 16, at 92 against 146-153 ms of CPU a frame, and version 4 alone at 17.9 / 19.8
    against 13.1 / 11.3 (``python bench/bench_pipeline.py --video-batch 16 8 4 2 1``). With bf16 the 16 that the
    speed figures there were measured with is kept (smaller passes not measured on such a CPU)."""
    from .fastpath import cpu_has_bf16

    return 16 if cpu_has_bf16() else 2


def _predict_crops(model, crops: list, batch_size: int | None = None
                   ) -> list[tuple[float, bool, tuple[float, float], np.ndarray, Any]]:
    """Run the model on FaceCrops, at most ``batch_size`` (default ``default_batch_size()``) at a time: (p_fake,
    is_fake, activations, mask 256x256, method probs or None) each."""
    from .preprocess import to_model_input

    res = []
    step = default_batch_size() if batch_size is None else batch_size
    for start in range(0, len(crops), step):
        out = model.predict(to_model_input([c.image for c in crops[start:start + step]]))
        masks = out.mask.numpy().astype(np.float32, copy=False)
        mp = out.method_probs.numpy() if out.method_probs is not None else None
        for i in range(len(masks)):
            res.append((float(out.p_fake[i]), bool(out.is_fake[i]), tuple(float(v) for v in out.activations[i]),
                        masks[i], None if mp is None else mp[i]))
    return res


def _face_results(rgb: np.ndarray, boxes: list, model) -> list[FaceResult]:
    from .faces import crop_face

    crops = [crop_face(rgb, b) for b in boxes]
    faces = []
    for crop, (p, fake, act, mask, mprobs) in zip(crops, _predict_crops(model, crops)):
        b = crop.box
        faces.append(FaceResult(
            box=(float(b.x0), float(b.y0), float(b.x1), float(b.y1)), score=float(b.score), p_fake=p, is_fake=fake,
            activations=act, method=guess_method(fake, mprobs, mask, crop), crop=crop.image, crop_mask=mask,
            square=tuple(float(v) for v in crop.square)))
    return faces


def _frame_mask(faces: list[FaceResult], shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """Max over faces judged manipulated of their crop masks pasted into the frame, and the region (x0, y0, x1, y1)
    outside which it is zero. Each mask is pasted into its square's bounding box only (the frame shifted so that box
    is the whole frame), which costs a fraction of a full-frame warp."""
    from .faces import FaceBox, FaceCrop, paste_mask

    h, w = shape[:2]
    mask = np.zeros((h, w), np.float32)
    region = None
    for f in faces:
        # Only faces judged manipulated have a region: the decoder runs on the winning half, so a face judged real
        # has an (all but) empty map by design; an untrained or odd checkpoint must not paint one anyway.
        if not f.is_fake or float(f.crop_mask.max(initial=0)) <= render.MASK_FLOOR:
            continue
        cx, cy, side = f.square
        x0, y0 = max(0, int(np.floor(cx - side / 2)) - 1), max(0, int(np.floor(cy - side / 2)) - 1)
        x1, y1 = min(w, int(np.ceil(cx + side / 2)) + 1), min(h, int(np.ceil(cy + side / 2)) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        crop = FaceCrop(f.crop, FaceBox(*f.box, f.score), (cx - x0, cy - y0, side), f.crop.shape[0])
        sub = paste_mask(f.crop_mask, crop, (y1 - y0, x1 - x0))
        np.maximum(mask[y0:y1, x0:x1], sub, out=mask[y0:y1, x0:x1])
        region = (x0, y0, x1, y1) if region is None else (min(region[0], x0), min(region[1], y0),
                                                          max(region[2], x1), max(region[3], y1))
    return mask, region


def analyze_image(image, model=None, *, min_score: float = MIN_FACE_SCORE,
                  max_pixels: int = MAX_PIXELS) -> ImageAnalysis:
    """Every face in a photo: box, calibrated p_fake, verdict, mask in image coordinates and method guess.

    image: a path, bytes, a PIL image or a numpy array (grey, RGB, RGBA; 8 or 16 bit; CMYK and palette files too).
    model: a loaded model, a spec (local dir / Hub id) or None for MTL_MODEL or the shipped checkpoint.
    """
    rgb = load_image(image, max_pixels)
    m = get_model(model)
    h, w = rgb.shape[:2]
    notes = []
    if min(h, w) < MIN_SIDE:
        notes.append(f"the image is {w}x{h} pixels, too small to hold a face the detector can find")
        boxes = []
    else:
        boxes = find_faces(rgb, min_score=min_score)
    faces = _face_results(rgb, boxes, m)
    mask, _ = _frame_mask(faces, (h, w))
    return ImageAnalysis(rgb, faces, mask, model_name(m), float(getattr(m, "threshold", 0.5)), notes)


# --- videos --------------------------------------------------------------------------------------------------------
@dataclass
class FrameResult:
    index: int  # frame number in the clip
    t: float  # seconds
    p_fake: float | None  # the most suspicious face in the frame; None when the frame has no face
    n_faces: int


@dataclass
class FaceTrack:
    """One face followed across analysed frames (boxes matched by overlap)."""

    id: int
    frames: list[int] = field(default_factory=list)
    p_fakes: list[float] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list, repr=False)
    methods: list[MethodGuess | None] = field(default_factory=list, repr=False)

    @property
    def p_fake(self) -> float:
        return float(np.mean(self.p_fakes))

    def is_fake(self, threshold: float) -> bool:
        return self.p_fake > threshold

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The box in the frame where this face looked most suspicious."""
        return self.boxes[int(np.argmax(self.p_fakes))]

    def method(self, threshold: float) -> MethodGuess | None:
        if not self.is_fake(threshold):
            return None
        return combine(self.methods, self.p_fakes)

    def to_dict(self, threshold: float) -> dict:
        m = self.method(threshold)
        return {"box": [round(float(v), 1) for v in self.box], "p_fake": round(self.p_fake, 4),
                "method": None if m is None else {k: round(v, 4) for k, v in m.probs.items()}}


@dataclass
class VideoAnalysis:
    path: str
    fps: float
    width: int
    height: int
    duration: float
    frames: list[FrameResult]  # every analysed frame
    tracks: list[FaceTrack]
    model: str
    threshold: float
    annotated_path: str | None
    frames_decoded: int
    notes: list[str] = field(default_factory=list)

    @property
    def frames_with_face(self) -> list[FrameResult]:
        return [f for f in self.frames if f.p_fake is not None]

    @property
    def frames_without_face(self) -> int:
        return sum(1 for f in self.frames if f.p_fake is None)

    @property
    def p_fake(self) -> float | None:
        """The paper's video score: the mean of the per-frame probabilities, frames without a face left out."""
        ps = [f.p_fake for f in self.frames_with_face]
        return float(np.mean(ps)) if ps else None

    @property
    def verdict(self) -> str:
        p = self.p_fake
        return "no_face" if p is None else ("fake" if p > self.threshold else "real")

    @property
    def method(self) -> MethodGuess | None:
        if self.verdict != "fake":
            return None
        ms, ws = [], []
        for tr in self.tracks:
            ms.extend(tr.methods)
            ws.extend(tr.p_fakes)
        return combine(ms, ws)

    @property
    def summary(self) -> str:
        n, none = len(self.frames), self.frames_without_face
        if self.p_fake is None:
            return f"no face found in the {n} analysed frames"
        text = verdict_text(self.p_fake, self.verdict == "fake")
        text += f", mean over {n - none} frames with a face"
        if none:
            text += f" ({none} of {n} analysed frames had no face)"
        return text

    def to_dict(self) -> dict:
        return {
            **_verdict_fields(self.verdict, self.p_fake, self.method),
            "faces": [t.to_dict(self.threshold) for t in self.tracks],
            "frames": [{"t": round(f.t, 3), "p_fake": None if f.p_fake is None else round(f.p_fake, 4)}
                       for f in self.frames],
            "frames_analysed": len(self.frames),
            "frames_without_face": self.frames_without_face,
            "duration": round(self.duration, 3),
            "model": self.model,
            "threshold": self.threshold,
            "notes": list(self.notes),
        }


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class _Tracker:
    """Greedy overlap matching of each analysed frame's faces to the live tracks."""

    def __init__(self, min_iou: float = 0.3, max_gap: int = 15):
        self.tracks: list[FaceTrack] = []
        self._last: dict[int, tuple[int, tuple]] = {}  # track id -> (last analysed-frame number, box)
        self.min_iou, self.max_gap = min_iou, max_gap
        self._n = 0

    def update(self, frame_index: int, faces: list[FaceResult]) -> None:
        self._n += 1
        live = {tid: box for tid, (n, box) in self._last.items() if self._n - n <= self.max_gap}
        pairs = sorted(((_iou(f.box, box), i, tid) for i, f in enumerate(faces) for tid, box in live.items()),
                       reverse=True)
        used_f, used_t, match = set(), set(), {}
        for iou, i, tid in pairs:
            if iou < self.min_iou or i in used_f or tid in used_t:
                continue
            match[i] = tid
            used_f.add(i)
            used_t.add(tid)
        for i, f in enumerate(faces):
            if i not in match:
                self.tracks.append(FaceTrack(len(self.tracks)))
                match[i] = len(self.tracks) - 1
            tr = self.tracks[match[i]]
            tr.frames.append(frame_index)
            tr.p_fakes.append(f.p_fake)
            tr.boxes.append(f.box)
            tr.methods.append(f.method)
            self._last[tr.id] = (self._n, f.box)


@dataclass
class _Pending:
    index: int
    t: float
    rgb: np.ndarray
    analysed: bool
    crops: list = field(default_factory=list)  # FaceCrops waiting for the model
    results: list = field(default_factory=list)


def analyze_video(path: str | os.PathLike, model=None, *, every: int = 1, detect_every: int = 1,
                  out_path: str | os.PathLike | None = None, max_duration: float | None = DEFAULT_MAX_DURATION_S,
                  batch_size: int | None = None, min_score: float = MIN_FACE_SCORE,
                  progress: Callable[[float, str], None] | None = None) -> VideoAnalysis:
    """Analyse a clip, streaming: every `every`-th frame goes through the detector and the model.

    detect_every: run the face detector on every n-th analysed frame and hold its boxes in between (faster; faces
    that move quickly are followed less closely). out_path: write the annotated clip there (every frame of the
    input, the latest annotation held over frames that were not analysed, the original audio kept).
    Faces from several frames are batched through the model (`batch_size`, default ``default_batch_size()``); at
    most a few dozen frames are held in memory whatever the clip's length. Raises InputError for unreadable clips or
    ones longer than `max_duration`.
    """
    from .faces import crop_face

    if every < 1 or detect_every < 1:
        raise ValueError("every and detect_every must be >= 1")
    if batch_size is None:
        batch_size = default_batch_size()
    elif batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    info = probe(path)
    if max_duration is not None and info.duration > max_duration:
        raise InputError(f"{Path(path).name}: the video is {info.duration:.0f} s long; the limit is "
                         f"{max_duration:.0f} s. Please trim it")
    m = get_model(model)
    threshold = float(getattr(m, "threshold", 0.5))
    notes: list[str] = []
    frames: list[FrameResult] = []
    tracker = _Tracker()
    writer = None
    if out_path is not None:
        writer = VideoWriter(out_path, info.width, info.height, info.fps, audio_from=path, warnings=notes)
    pending: deque[_Pending] = deque()
    n_crops = 0
    max_pending = max(batch_size * 2, 32)
    held_boxes: list = []
    held_draw: tuple | None = None  # (mask, region, labels) of the latest analysed frame, for the writer
    n_analysed = 0
    decoded = 0
    total = max(1, info.n_frames)

    def flush():
        nonlocal n_crops, held_draw
        batch = [c for p in pending for c in p.crops]
        results = _predict_crops(m, batch, batch_size)
        k = 0
        while pending:
            p = pending.popleft()
            if p.analysed:
                faces = []
                for crop in p.crops:
                    prob, fake, act, mask, mprobs = results[k]
                    k += 1
                    b = crop.box
                    faces.append(FaceResult((float(b.x0), float(b.y0), float(b.x1), float(b.y1)), float(b.score),
                                            prob, fake, act, guess_method(fake, mprobs, mask, crop), crop.image, mask,
                                            tuple(float(v) for v in crop.square)))
                p.crops = []
                frames.append(FrameResult(p.index, p.t, max((f.p_fake for f in faces), default=None), len(faces)))
                tracker.update(p.index, faces)
                if writer is not None:
                    fmask, region = _frame_mask(faces, p.rgb.shape)
                    labels = [render.BoxLabel(f.box, f.label, f.is_fake) for f in faces]
                    held_draw = (fmask if region is not None else None, region, labels)
            if writer is not None:
                writer.write(_draw_frame(p.rgb, held_draw), p.t)
        n_crops = 0

    try:
        stream = prefetch(iter_frames(path, every=every, decode_all=writer is not None, warnings=notes))
        for fr in stream:
            decoded += 1
            analysed = fr.index % every == 0
            p = _Pending(fr.index, fr.t, fr.rgb, analysed)
            if analysed:
                if n_analysed % detect_every == 0:
                    held_boxes = find_faces(fr.rgb, min_score=min_score)
                n_analysed += 1
                p.crops = [crop_face(fr.rgb, b) for b in held_boxes]
                n_crops += len(p.crops)
            pending.append(p)
            if n_crops >= batch_size or len(pending) >= max_pending:
                flush()
            if progress is not None and decoded % 10 == 0:
                progress(min(1.0, fr.index / total), f"frame {fr.index + 1} of ~{info.n_frames}")
        flush()
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
            Path(out_path).unlink(missing_ok=True)
        raise
    if writer is not None:
        writer.close()
    if progress is not None:
        progress(1.0, "done")
    return VideoAnalysis(str(path), info.fps, info.width, info.height, info.duration, frames, tracker.tracks,
                         model_name(m), threshold, None if out_path is None else str(out_path), decoded, notes)


def _draw_frame(rgb: np.ndarray, held: tuple | None) -> np.ndarray:
    if held is None:
        return rgb
    mask, region, labels = held
    out = render.overlay_mask(rgb, mask, region=region) if mask is not None else rgb.copy()
    return render.draw_boxes(out, labels, inplace=True)
