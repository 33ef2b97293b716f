"""prepare_ffpp on tiny FaceForensics++ / FaceForensics trees written by the test (a few frames of mp4v video)."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from train.prepare_ffpp import identity_groups, mask_square, prepare, scan_ffpp

H, W, FRAMES = 96, 128, 6
BOX = (40, 20, 80, 70)  # x0, y0, x1, y1 of the manipulated region: 40 wide, 50 tall


def _frames(kind: str, shift: int = 0):
    for t in range(FRAMES):
        if kind == "mask":
            f = np.zeros((H, W, 3), np.uint8)
            x0, y0, x1, y1 = BOX
            f[y0:y1, x0 + shift:x1 + shift] = 255
        else:
            f = np.full((H, W, 3), 60 if kind == "real" else 180, np.uint8)
            f[:, :, 1] = (np.arange(W) * 2)[None, :].astype(np.uint8)  # a horizontal ramp to check framing
            f[0, 0] = t
        yield f


def _video(path: Path, frames) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (W, H))
    assert w.isOpened()
    for f in frames:
        w.write(f)
    w.release()


def _png_frames(folder: Path, frames) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{t:04d}.png"), f)


@pytest.fixture
def ffpp(tmp_path) -> Path:
    root = tmp_path / "ffpp"
    for vid in ("000", "003", "010", "011"):
        _video(root / "original_sequences/youtube/c23/videos" / f"{vid}.mp4", _frames("real"))
    for pair in ("000_003", "003_000", "010_011", "011_010"):
        _video(root / "manipulated_sequences/Deepfakes/c23/videos" / f"{pair}.mp4", _frames("fake"))
        _video(root / "manipulated_sequences/Deepfakes/masks/videos" / f"{pair}.mp4", _frames("mask"))
    # Face2Face as extracted frame folders, masks shifted right by 4 px; one video without a mask
    for pair in ("000_003", "010_011"):
        _png_frames(root / "manipulated_sequences/Face2Face/c23/images" / pair, _frames("fake"))
        _png_frames(root / "manipulated_sequences/Face2Face/masks/images" / pair, _frames("mask", shift=4))
    _video(root / "manipulated_sequences/Face2Face/c23/videos/003_000.mp4", _frames("fake"))
    return root


def _rows(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_mask_square_is_the_papers_box():
    mask = np.zeros((H, W, 3), np.uint8)
    mask[20:70, 40:80] = 200
    square, binary = mask_square(mask)
    assert square == pytest.approx((60.0, 45.0, 65.0))  # centre of the box, 1.3 x its height
    assert binary.sum() == 50 * 40
    assert mask_square(np.zeros((H, W, 3), np.uint8)) is None


def test_pairs_are_grouped_so_no_face_crosses_splits(ffpp):
    fakes, problems = scan_ffpp(ffpp, "c23", None)
    assert problems == ["Face2Face/003_000: no mask"]
    groups = identity_groups(fakes)
    assert groups["000"] == groups["003"] != groups["010"] == groups["011"]


def test_prepare_writes_the_manifest_layout(ffpp, tmp_path):
    out = tmp_path / "out"
    summary = prepare(ffpp, out, every=2, seed=0, val_frac=0.0, test_frac=0.5, progress=False)
    rows = _rows(out)
    assert list(rows[0]) == ["image", "mask", "label", "method", "person", "split"]
    fakes = [r for r in rows if r["label"] == "fake"]
    reals = [r for r in rows if r["label"] == "real"]
    # frames 0, 2, 4 of 4 Deepfakes + 2 Face2Face videos; originals of all 4 targets
    assert len(fakes) == 6 * 3 and len(reals) == 4 * 3
    assert {r["method"] for r in fakes} == {"deepfake", "reenact"}
    assert all(r["mask"] == "" and r["method"] == "" for r in reals)
    assert summary["skipped"] == {"no mask video": 1}
    # splits follow identity groups: 000/003 together, 010/011 together, both splits used
    split_of = {r["person"]: r["split"] for r in rows}
    assert len(split_of) == 2 and set(split_of.values()) == {"train", "test"}
    for r in rows:
        assert split_of[r["person"]] == r["split"]
    # the crop: the mask box (50 px tall) becomes 256 / 1.3 = 197 px tall, centred
    for r in fakes:
        m = cv2.imread(str(out / r["mask"]), cv2.IMREAD_GRAYSCALE)
        assert m.shape == (256, 256)
        ys, xs = np.nonzero(m > 127)
        assert abs((ys.max() - ys.min() + 1) - 256 / 1.3) <= 6
        assert abs((ys.max() + ys.min()) / 2 - 127.5) <= 4 and abs((xs.max() + xs.min()) / 2 - 127.5) <= 4
    # an original frame is framed by its twin fake's mask box: its ramp matches the fake crop's
    real = cv2.imread(str(out / "images/original_000_00002.jpg"))
    fake = cv2.imread(str(out / "images/Deepfakes_000_003_00002.jpg"))
    assert np.abs(real[:, :, 1].astype(int) - fake[:, :, 1].astype(int)).mean() < 6
    assert real[:, :, 0].mean() < fake[:, :, 0].mean() - 60  # and it really is the original


def test_official_splits_are_used(ffpp, tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "train.json").write_text(json.dumps([["010", "011"]]))
    (splits / "test.json").write_text(json.dumps([["000", "003"]]))
    out = tmp_path / "out"
    prepare(ffpp, out, every=3, splits_dir=splits, methods=["Deepfakes"], progress=False)
    rows = _rows(out)
    assert {r["method"] for r in rows} == {"deepfake", ""}
    assert {r["split"] for r in rows if "000" in r["image"].split("_")[1]} == {"test"}
    assert {r["split"] for r in rows if "010" in r["image"].split("_")[1]} == {"train"}


def test_original_faceforensics_layout(tmp_path):
    root = tmp_path / "ff"
    for split in ("train", "test"):
        for name in (f"{split}_a", f"{split}_b"):
            _video(root / split / "original" / f"{name}.avi", _frames("real"))
            _video(root / split / "altered" / f"{name}.avi", _frames("fake"))
            _video(root / split / "mask" / f"{name}.avi", _frames("mask"))
    out = tmp_path / "out"
    prepare(root, out, every=3, progress=False)
    rows = _rows(out)
    assert len(rows) == 4 * 2 * 2
    assert {r["method"] for r in rows if r["label"] == "fake"} == {"reenact"}
    assert all(r["split"] == r["person"].split("_")[0] for r in rows)
