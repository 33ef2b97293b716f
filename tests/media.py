"""Test media made on the fly: clips of the astronaut photograph (scikit-image ships it) and a free local port."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import av
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pan_frames(n: int, side: int = 256, faceless: bool = False):
    import skimage.data

    img = skimage.data.astronaut()
    if faceless:  # the lower right of the photo: suit and helmet, no face
        img = np.ascontiguousarray(img[256:, 256:])
        img = np.concatenate([img, img], axis=0)
        img = np.concatenate([img, img], axis=1)
    for i in range(n):
        x = int(round(70 + 30 * math.sin(2 * math.pi * i / max(n, 1))))
        yield np.ascontiguousarray(img[20:20 + side, x:x + side])


def write_clip(path: Path, n: int = 30, fps: int = 25, audio: bool = True, faceless: bool = False,
               side: int = 256, frames: list[np.ndarray] | None = None) -> Path:
    """An H.264 clip of the astronaut panning (or of ``frames``), with a 440 Hz tone (AAC) when audio is asked for."""
    frames = list(pan_frames(n, side, faceless)) if frames is None else frames
    n = len(frames)
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=fps)
    v.height, v.width = frames[0].shape[:2]
    v.pix_fmt = "yuv420p"
    a = None
    if audio:
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = i
        for p in v.encode(frame):
            out.mux(p)
    for p in v.encode(None):
        out.mux(p)
    if a is not None:
        sr, total = 16000, int(16000 * n / fps)
        t = np.arange(total) / sr
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, total, 1024):
            chunk = tone[start:start + 1024][None]
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            af.sample_rate = sr
            af.pts = start
            for p in a.encode(af):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
    out.close()
    return path
