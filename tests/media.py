"""Test media made on the fly: clips and a tiny built dataset of the astronaut photograph (scikit-image ships it), and a
free local port."""

from __future__ import annotations

import csv
import math
import socket
from pathlib import Path

import av
import numpy as np
from PIL import Image


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


def tiny_dataset(root, astronaut, n_people=4):
    """A built dataset in train.build_dataset's layout (people p0, p1 train; p2, p3 val).

    Reals: crops of the astronaut with jitter; fakes: a textured square pasted in (exact mask).
    """
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    base = np.asarray(Image.fromarray(astronaut[0:300, 100:400]).resize((256, 256)))
    for p in range(n_people):
        split = ["train", "train", "val", "val"][p]
        for k in range(6):
            img = np.clip(base.astype(int) + rng.integers(-20, 20, 3), 0, 255).astype(np.uint8)
            name = f"p{p}_{k}"
            Image.fromarray(img).save(root / "images" / f"{name}_real.jpg", quality=95)
            rows.append(dict(image=f"images/{name}_real.jpg", mask="", label="real", method="", person=f"p{p}",
                             split=split))
            fake, mask = img.copy(), np.zeros((256, 256), np.uint8)
            y, x = rng.integers(40, 150, 2)
            fake[y:y + 80, x:x + 80] = rng.integers(0, 255, (80, 80, 3))
            mask[y:y + 80, x:x + 80] = 255
            Image.fromarray(fake).save(root / "images" / f"{name}_fake.jpg", quality=95)
            Image.fromarray(mask).save(root / "masks" / f"{name}_fake.png")
            rows.append(dict(image=f"images/{name}_fake.jpg", mask=f"masks/{name}_fake.png", label="fake",
                             method="selfblend", person=f"p{p}", split=split))
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root
