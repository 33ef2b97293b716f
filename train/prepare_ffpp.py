"""Prepare FaceForensics++ (or the original FaceForensics) as the paper did, into the builder's manifest layout.

    python -m train.prepare_ffpp --root FFPP_ROOT --out OUT [--every K] [--methods Deepfakes Face2Face ...]
                                 [--compression c23] [--max-frames N] [--splits DIR]

FaceForensics++ tree (videos, or frame folders as its extraction script writes them)::

    original_sequences/youtube/<compression>/videos/000.mp4          (or .../images/000/0000.png ...)
    manipulated_sequences/<Method>/<compression>/videos/000_003.mp4  (target 000, source 003)
    manipulated_sequences/<Method>/masks/videos/000_003.mp4          (or .../masks/images/000_003/*.png)

The original FaceForensics (2018) tree is ``[<split>/]{original,altered,mask}/<name>.{avi,mp4}`` (or frame folders);
its manipulation is Face2Face, so its method is ``reenact``.

What is done, after the paper: every K-th frame is taken; the crop is the square centred on the manipulation mask's
bounding box with side 1.3 x the box height, resized to 256x256; an original frame is cropped with the box of its
twin fake's mask on the same frame (the first method, alphabetically, that has one), so real and fake faces are
framed alike. Frames with an empty mask are skipped. Crops are stored as JPEG quality 95, masks as 0/255 PNG.

Method names are mapped to the project's families (``mtl.constants.FAMILIES``): Deepfakes and DeepFakeDetection ->
``deepfake``; Face2Face and NeuralTextures -> ``reenact`` (both re-render the target's expression);
FaceSwap and FaceShifter -> ``faceswap``. Any other method keeps its lower-cased name (a method index of -1).

Splits: with ``--splits DIR`` the official ``train.json``/``val.json``/``test.json`` (lists of id pairs); otherwise
ids are grouped with every id they were paired with (so no face appears in two splits) and the groups are split
with the seed like ``train.build_dataset`` does.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from mtl.constants import CROP_SCALE, FACE_SIZE
from mtl.faces import crop_square
from train.build_dataset import MANIFEST_COLUMNS, SAVE_QUALITY, Photo, split_people

METHOD_FAMILY = {
    "Deepfakes": "deepfake",
    "DeepFakeDetection": "deepfake",
    "Face2Face": "reenact",
    "NeuralTextures": "reenact",
    "FaceSwap": "faceswap",
    "FaceShifter": "faceswap",
}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv"}
FRAME_EXTS = {".png", ".jpg", ".jpeg"}


# --- reading frames ----------------------------------------------------------------------------------------------


def find_source(folder: Path, name: str) -> Path | None:
    """``name`` in a ``videos`` or ``images`` folder: a video file or a folder of frame images."""
    for sub in ("videos", "images", ""):
        base = folder / sub if sub else folder
        for ext in VIDEO_EXTS:
            if (base / f"{name}{ext}").is_file():
                return base / f"{name}{ext}"
        if (base / name).is_dir():
            return base / name
    return None


def read_frames(source: Path, every: int, max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB frame) for every ``every``-th frame of a video or frame folder."""
    taken = 0
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in FRAME_EXTS)
        for i in range(0, len(files), every):
            bgr = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
            if bgr is not None:
                yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                taken += 1
                if max_frames and taken >= max_frames:
                    return
        return
    cap = cv2.VideoCapture(str(source))
    try:
        i = 0
        while True:
            if i % every:
                if not cap.grab():
                    return
            else:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                taken += 1
                if max_frames and taken >= max_frames:
                    return
            i += 1
    finally:
        cap.release()


Square = tuple[float, float, float]


def mask_square(mask_rgb: np.ndarray, scale: float = CROP_SCALE) -> tuple[Square, np.ndarray] | None:
    """The paper's crop square from a mask frame (centre of its box, side ``scale`` x box height) and the binary mask.

    Mask videos are lossy: a pixel counts as manipulated above mid-grey.
    """
    binary = (mask_rgb.max(axis=2) > 127).astype(np.float32)
    ys, xs = np.nonzero(binary)
    if len(ys) < 16:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return ((x0 + x1) / 2, (y0 + y1) / 2, scale * (y1 - y0)), binary


# --- the datasets' layouts -----------------------------------------------------------------------------------------


@dataclass
class FakeVideo:
    method: str  # the dataset's own name (Deepfakes, Face2Face, ..., or FaceForensics)
    name: str  # e.g. 000_003
    fake: Path
    mask: Path
    original: Path | None  # the target's real video
    target: str  # id of the real video this fake was made from
    ids: tuple[str, ...]  # every identity involved (target and source)
    split: str | None = None  # from the dataset layout (FaceForensics 2018 has train/val/test folders)


def scan_ffpp(root: Path, compression: str, methods: list[str] | None) -> tuple[list[FakeVideo], list[str]]:
    """The fake videos of a FaceForensics++ tree and the problems found (missing masks...)."""
    fakes, problems = [], []
    originals: dict[str, Path] = {}
    for dataset in sorted((root / "original_sequences").glob("*")):
        folder = dataset / compression
        for p in sorted(folder.glob("videos/*")) + sorted(folder.glob("images/*")):
            if p.suffix.lower() in VIDEO_EXTS or p.is_dir():
                originals.setdefault(p.stem if p.is_file() else p.name, p)
    for mdir in sorted((root / "manipulated_sequences").glob("*")):
        method = mdir.name
        if methods and method not in methods:
            continue
        folder = mdir / compression
        names = sorted({(p.stem if p.is_file() else p.name) for p in list(folder.glob("videos/*"))
                        + list(folder.glob("images/*")) if p.suffix.lower() in VIDEO_EXTS or p.is_dir()})
        for name in names:
            fake = find_source(folder, name)
            mask = find_source(mdir / "masks", name)
            if mask is None:
                problems.append(f"{method}/{name}: no mask")
                continue
            ids = tuple(name.split("_"))
            target = ids[0]
            fakes.append(FakeVideo(method, name, fake, mask, originals.get(target), target, ids))
    return fakes, problems


def scan_faceforensics_v1(root: Path) -> tuple[list[FakeVideo], list[str]]:
    """The 2018 FaceForensics tree: folders holding ``original``, ``altered`` and ``mask`` side by side."""
    fakes, problems = [], []
    for altered in sorted(root.rglob("altered")):
        base = altered.parent
        split = base.name if base.name in ("train", "val", "test") else None
        for p in sorted(altered.iterdir()):
            if not (p.suffix.lower() in VIDEO_EXTS or p.is_dir()):
                continue
            name = p.stem if p.is_file() else p.name
            mask = find_source(base / "mask", name)
            original = find_source(base / "original", name)
            if mask is None:
                problems.append(f"{base.name}/{name}: no mask")
                continue
            fakes.append(FakeVideo("FaceForensics", name, p, mask, original, name, (name,), split))
    return fakes, problems


def family_of(method: str) -> str:
    return "reenact" if method == "FaceForensics" else METHOD_FAMILY.get(method, method.lower())


# --- splits ----------------------------------------------------------------------------------------------------------


def identity_groups(fakes: list[FakeVideo]) -> dict[str, str]:
    """Each id's group: ids paired in any fake are one group (union-find), named by its smallest id."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for f in fakes:
        for other in f.ids[1:]:
            ra, rb = find(f.ids[0]), find(other)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        find(f.ids[0])
    return {a: find(a) for a in parent}


def official_splits(folder: Path) -> dict[str, str]:
    """id -> split from FaceForensics++'s train/val/test.json (lists of id pairs)."""
    out = {}
    for split in ("train", "val", "test"):
        path = folder / f"{split}.json"
        if path.is_file():
            for pair in json.loads(path.read_text()):
                for i in pair:
                    out[str(i)] = split
    return out


def assign_splits(fakes: list[FakeVideo], seed: int, val_frac: float, test_frac: float,
                  splits_dir: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """(id -> person group, id -> split)."""
    groups = identity_groups(fakes)
    if splits_dir is not None:
        official = official_splits(splits_dir)
        return groups, {i: official.get(i, "train") for i in groups}
    fixed = {groups[f.target]: f.split for f in fakes if f.split}
    free = [Photo(i, g) for i, g in groups.items() if g not in fixed]
    by_group = split_people(free, seed, val_frac, test_frac) if free else {}
    by_group.update(fixed)
    return groups, {i: by_group[g] for i, g in groups.items()}


# --- preparing -------------------------------------------------------------------------------------------------------


def _save(out: Path, stem: str, rgb: np.ndarray, mask: np.ndarray | None) -> tuple[str, str]:
    image_rel = f"images/{stem}.jpg"
    cv2.imwrite(str(out / image_rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, SAVE_QUALITY])
    if mask is None:
        return image_rel, ""
    mask_rel = f"masks/{stem}.png"
    cv2.imwrite(str(out / mask_rel), ((mask >= 0.5) * 255).astype(np.uint8))
    return image_rel, mask_rel


def prepare(root: str | Path, out: str | Path, every: int = 10, methods: list[str] | None = None,
            compression: str = "c23", max_frames: int | None = None, seed: int = 0, val_frac: float = 0.1,
            test_frac: float = 0.1, splits_dir: str | Path | None = None, progress: bool = True) -> dict:
    from tqdm import tqdm

    root, out = Path(root), Path(out)
    if (root / "manipulated_sequences").is_dir():
        fakes, problems = scan_ffpp(root, compression, methods)
    else:
        fakes, problems = scan_faceforensics_v1(root)
    if not fakes:
        raise SystemExit(f"no manipulated videos with masks found under {root} (compression {compression!r})")
    groups, split_of = assign_splits(fakes, seed, val_frac, test_frac, Path(splits_dir) if splits_dir else None)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)

    counts, skipped = Counter(), Counter()
    # original video -> {frame index: crop square} from its twin fake's mask (the first method that has one)
    original_boxes: dict[Path, dict[int, Square]] = {}
    originals: dict[Path, FakeVideo] = {}
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()

        def emit(image_rel, mask_rel, label, method, video: FakeVideo):
            person, split = groups[video.target], split_of[video.target]
            writer.writerow(dict(image=image_rel, mask=mask_rel, label=label, method=method, person=person,
                                 split=split))
            counts[(split, method or "real")] += 1

        for video in tqdm(sorted(fakes, key=lambda v: (v.method, v.name)), desc="fake videos", disable=not progress):
            family = family_of(video.method)
            boxes = original_boxes.setdefault(video.original, {}) if video.original else {}
            if video.original:
                originals.setdefault(video.original, video)
            frames = zip(read_frames(video.fake, every, max_frames), read_frames(video.mask, every, max_frames))
            for (i, rgb), (_, mask_rgb) in frames:
                found = mask_square(mask_rgb)
                if found is None:
                    skipped["empty mask"] += 1
                    continue
                square, binary = found
                if binary.shape != rgb.shape[:2]:
                    skipped["mask size differs"] += 1
                    continue
                crop = crop_square(rgb, square, FACE_SIZE)
                mask = crop_square(binary, square, FACE_SIZE)
                stem = f"{video.method}_{video.name}_{i:05d}"
                emit(*_save(out, stem, crop, mask), "fake", family, video)
                boxes.setdefault(i, square)
        for path, video in tqdm(originals.items(), desc="original videos", disable=not progress):
            boxes = original_boxes[path]
            name = path.stem if path.is_file() else path.name
            for i, rgb in read_frames(path, every, max_frames):
                if i not in boxes:
                    continue
                crop = crop_square(rgb, boxes[i], FACE_SIZE)
                emit(*_save(out, f"original_{name}_{i:05d}", crop, None), "real", "", video)
    skipped.update({"no mask video": len(problems)})
    return dict(fakes=len(fakes), originals=len(originals), samples=sum(counts.values()),
                counts={f"{s}/{m}": c for (s, m), c in sorted(counts.items())},
                skipped={k: v for k, v in skipped.items() if v}, problems=problems)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="FaceForensics(++) -> 256x256 crops, masks and manifest.csv")
    ap.add_argument("--root", required=True, help="FaceForensics++ root (or the 2018 FaceForensics root)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--every", type=int, default=10, help="take every K-th frame")
    ap.add_argument("--methods", nargs="*", default=None, help="e.g. Deepfakes Face2Face FaceSwap NeuralTextures")
    ap.add_argument("--compression", default="c23", help="raw, c23 or c40 (FaceForensics++ folder name)")
    ap.add_argument("--max-frames", type=int, default=None, help="at most N frames per video")
    ap.add_argument("--splits", default=None, help="folder with FaceForensics++'s official train/val/test.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--test-frac", type=float, default=0.1)
    a = ap.parse_args(argv)
    s = prepare(a.root, a.out, a.every, a.methods, a.compression, a.max_frames, a.seed, a.val_frac, a.test_frac,
                a.splits)
    print(f"{s['samples']} samples from {s['fakes']} fake and {s['originals']} original videos")
    for k, v in s["counts"].items():
        print(f"  {k}: {v}")
    print("skipped: " + (", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "none"))
    for p in s["problems"][:20]:
        print(f"  {p}")


if __name__ == "__main__":
    main()
