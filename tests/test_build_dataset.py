import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtl.constants import FAMILIES
from train.build_dataset import build, person_of, scan_photos, split_people


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory, astronaut):
    """Eight 'people' (LFW layout), each two variants of the astronaut, plus a photo without a face."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for p in range(8):
        name = f"Person_{p}"
        for k in range(2):
            img = astronaut[:, ::-1] if (p + k) % 2 else astronaut
            img = np.clip(img.astype(np.float32) * rng.uniform(0.8, 1.1, 3), 0, 255).astype(np.uint8)
            img = cv2.resize(np.ascontiguousarray(img), (300, 300), interpolation=cv2.INTER_AREA)
            _write(root / name / f"{name}_{k:04d}.jpg", img)
    _write(root / "Nobody" / "Nobody_0001.jpg", np.full((200, 200, 3), 128, np.uint8))
    return root


def _manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_person_comes_from_the_folder_or_the_stem(tmp_path):
    assert person_of(tmp_path / "Ann_Lee" / "Ann_Lee_0001.jpg", tmp_path) == "Ann_Lee"
    # webmorph-like flat sets: the stem up to "_" names the person across sets; a small folder is one person
    assert person_of(tmp_path / "neutral_front" / "001_03.jpg", tmp_path, folder_size=102) == "001"
    assert person_of(tmp_path / "smiling_front" / "001_08.jpg", tmp_path, folder_size=102) == "001"
    assert person_of(tmp_path / "canada" / "003f.jpg", tmp_path, folder_size=40) == "003f"
    assert person_of(tmp_path / "zoom" / "15cm.jpg", tmp_path, folder_size=4) == "zoom"
    assert person_of(tmp_path / "lisa" / "lisa1.jpg", tmp_path, folder_size=4) == "lisa"
    assert person_of(tmp_path / "003f.jpg", tmp_path) == "003f"
    assert person_of(tmp_path / "ann" / "IMG_1.jpg", tmp_path, rule="folder") == "ann"


def test_splits_are_disjoint_by_person_and_sized_by_photos():
    from train.build_dataset import Photo

    photos = [Photo(f"{p}/{k}.jpg", f"p{p}") for p in range(100) for k in range(1 + p % 3)]
    split = split_people(photos, seed=0, val_frac=0.1, test_frac=0.2)
    n = {s: sum(1 for ph in photos if split[ph.person] == s) for s in ("train", "val", "test")}
    assert abs(n["test"] / len(photos) - 0.2) < 0.03 and abs(n["val"] / len(photos) - 0.1) < 0.03
    assert split == split_people(photos, seed=0, val_frac=0.1, test_frac=0.2)
    assert split != split_people(photos, seed=1, val_frac=0.1, test_frac=0.2)


@pytest.mark.slow
def test_build_end_to_end(faces_dir, tmp_path):
    out = tmp_path / "ds"
    summary = build(str(faces_dir), str(out), workers=2, seed=5, fakes_per_real=2, val_frac=0.25, test_frac=0.25,
                    progress=False)
    rows = _manifest(out)
    assert list(rows[0]) == ["image", "mask", "label", "method", "person", "split"]
    assert summary["skipped"] == {"no face": 1}
    assert summary["samples"] == len(rows) == 16 * 3
    reals = [r for r in rows if r["label"] == "real"]
    fakes = [r for r in rows if r["label"] == "fake"]
    assert len(reals) == 16 and len(fakes) == 32
    assert all(r["mask"] == "" and r["method"] == "" for r in reals)
    # families balanced by cycling
    assert sorted({r["method"] for r in fakes}) == sorted(FAMILIES)
    assert all(sum(r["method"] == f for r in fakes) == 8 for f in FAMILIES)
    # splits disjoint by person, all three present
    people = {s: {r["person"] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
    assert all(people.values())
    assert not (people["train"] & people["val"] or people["train"] & people["test"] or people["val"] & people["test"])
    # files: 256x256 crops, masks that mark something, reals and fakes of one photo framed identically
    for r in rows:
        img = cv2.imread(str(out / r["image"]))
        assert img.shape == (256, 256, 3)
        if r["label"] == "fake":
            m = cv2.imread(str(out / r["mask"]), cv2.IMREAD_UNCHANGED)
            assert m.shape == (256, 256) and (m >= 128).sum() > 200
            # outside the mask the fake is the real crop up to JPEG noise: the same framing
            photo_index = Path(r["image"]).name.split("_")[0]
            real = cv2.imread(str(out / "images" / f"{photo_index}_0_real.jpg"))
            outside = m == 0
            assert np.abs(real.astype(int) - img.astype(int))[outside].mean() < 6


@pytest.mark.slow
def test_build_is_deterministic_whatever_the_workers(faces_dir, tmp_path):
    def digest(out: Path) -> str:
        h = hashlib.sha256((out / "manifest.csv").read_bytes())
        for p in sorted((out / "images").iterdir()) + sorted((out / "masks").iterdir()):
            h.update(p.read_bytes())
        return h.hexdigest()

    build(str(faces_dir), str(tmp_path / "a"), workers=1, seed=3, limit=6, progress=False)
    build(str(faces_dir), str(tmp_path / "b"), workers=2, seed=3, limit=6, progress=False)
    build(str(faces_dir), str(tmp_path / "c"), workers=1, seed=4, limit=6, progress=False)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_scan_finds_images_recursively(faces_dir):
    photos = scan_photos(faces_dir)
    assert len(photos) == 17 and {p.person for p in photos} == {f"Person_{i}" for i in range(8)} | {"Nobody"}


def test_webmorph_people(shared_dir):
    photos = scan_photos(shared_dir / "data" / "faces" / "webmorph")
    people = {p.person for p in photos}
    assert "001" in people and "lisa" in people and "zoom" in people
    assert sum(p.person == "001" for p in photos) == 2  # neutral and smiling


def test_cli_on_shared_lfw(shared_dir, tmp_path):
    from train.build_dataset import main

    main(["--faces", str(shared_dir / "data" / "faces" / "lfw"), "--out", str(tmp_path / "lfw"), "--limit", "8",
          "--workers", "1"])
    rows = _manifest(tmp_path / "lfw")
    assert len(rows) >= 12


@pytest.mark.slow
def test_forge_dataset_remakes_the_built_samples(faces_dir, tmp_path):
    import torch

    from train.data import ForgeDataset, ManifestDataset

    out = tmp_path / "ds"
    build(str(faces_dir), str(out), workers=1, seed=2, limit=8, val_frac=0.0, test_frac=0.0, progress=False)
    built = ManifestDataset(out, "train")
    live = ForgeDataset(faces_dir, "train", seed=2, limit=8, val_frac=0.0, test_frac=0.0)
    by_image = {r["image"]: i for i, r in enumerate(built.rows)}
    checked = 0
    for i in range(len(live)):
        job, k = live.jobs[i // live.per_photo], i % live.per_photo
        name = f"images/{job.index:06d}_{k}_{job.variants[k].family or 'real'}.jpg"
        if name not in by_image:
            continue  # a photo the builder skipped
        a, b = live[i], built[by_image[name]]
        assert a["label"] == b["label"] and a["method"] == b["method"]
        assert torch.equal(a["mask"], b["mask"])
        assert torch.allclose(a["image"], b["image"])
        checked += 1
        if checked == 4:
            break
    assert checked == 4
    assert {live[i]["label"].item() for i in range(2)} == {0, 1}
    augmented = ForgeDataset(faces_dir, "train", seed=2, limit=8, val_frac=0.0, test_frac=0.0, augment=True)
    item = augmented[1]  # the same forgery, augmented: a new image, the label kept
    assert item["label"] == live[1]["label"] and not torch.allclose(item["image"], live[1]["image"])


def test_forge_dataset_splits_do_not_depend_on_the_forgery_seed(faces_dir):
    from train.data import ForgeDataset

    train = ForgeDataset(faces_dir, "train", seed=0, val_frac=0.25, test_frac=0.25)
    val = ForgeDataset(faces_dir, "val", seed=1, val_frac=0.25, test_frac=0.25)
    assert {j.photo.person for j in train.jobs}.isdisjoint({j.photo.person for j in val.jobs})
