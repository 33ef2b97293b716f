"""`mtl scan` end to end: images, a clip and broken files in a folder -> report.json as the issue specifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtl.cli import main
from tests.media import write_clip

ROOT = Path(__file__).resolve().parents[1]
ITEM_KEYS = {"path", "kind", "verdict", "p_fake", "method", "mask", "faces", "frames", "annotated", "error"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut):
    d = tmp_path_factory.mktemp("inputs")
    Image.fromarray(astronaut).save(d / "astronaut.png")
    Image.fromarray(astronaut[::2, ::2]).convert("L").save(d / "grey.jpg")
    Image.fromarray(np.full((64, 80, 3), 200, np.uint8)).save(d / "wall.png")  # no face
    (d / "notes.jpg").write_text("a text file pretending to be a photo\n")
    (d / "empty.mp4").write_bytes(b"")
    (d / "readme.txt").write_text("not an input: skipped when walking the folder")
    write_clip(d / "clip.mp4", audio=False,
               frames=[np.ascontiguousarray(astronaut[20 + i:276 + i, 100:356]) for i in range(12)])
    return d


def _check_schema(report: dict, out: Path):
    assert set(report) == {"model", "items"} and isinstance(report["model"], str) and report["model"]
    for it in report["items"]:
        assert set(it) == ITEM_KEYS, it
        assert it["kind"] in ("image", "video") and it["verdict"] in ("fake", "real", "no_face", "error")
        if it["verdict"] in ("fake", "real"):
            assert 0.0 <= it["p_fake"] <= 1.0 and it["faces"] and it["error"] is None
            assert it["p_fake"] == pytest.approx(max(f["p_fake"] for f in it["faces"]) if it["kind"] == "image"
                                                 else np.mean([f["p_fake"] for f in it["frames"]
                                                               if f["p_fake"] is not None]), abs=1e-3)
        else:
            assert it["p_fake"] is None and it["method"] is None
        if it["verdict"] == "error":
            assert isinstance(it["error"], str) and it["error"] and it["mask"] is None and it["annotated"] is None
        if it["verdict"] == "real":
            assert it["method"] is None and all(f["method"] is None for f in it["faces"])
        for f in it["faces"]:
            assert len(f["box"]) == 4 and 0 <= f["p_fake"] <= 1 and set(f) == {"box", "p_fake", "method"}
        if it["kind"] == "image" and it["verdict"] != "error":
            assert (out / it["mask"]).is_file() and it["annotated"] is None and it["frames"] == []
        if it["kind"] == "video" and it["verdict"] != "error":
            assert (out / it["annotated"]).is_file() and it["mask"] is None
            assert all(set(f) == {"t", "p_fake"} for f in it["frames"])


def test_scan_folder_and_files(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    missing = str(inputs / "missing.png")
    rc = main(["scan", str(inputs), missing, "--out", str(out), "--quiet"])
    assert rc == 1  # some items are errors
    report = json.loads((out / "report.json").read_text())
    _check_schema(report, out)
    by_name = {Path(it["path"]).name: it for it in report["items"]}
    assert set(by_name) == {"astronaut.png", "grey.jpg", "wall.png", "notes.jpg", "empty.mp4", "clip.mp4",
                            "missing.png"}
    assert by_name["missing.png"]["path"] == missing  # the path as given
    assert by_name["astronaut.png"]["verdict"] in ("fake", "real") and len(by_name["astronaut.png"]["faces"]) == 1
    assert by_name["grey.jpg"]["verdict"] in ("fake", "real")
    assert by_name["wall.png"]["verdict"] == "no_face" and by_name["wall.png"]["faces"] == []
    for bad, words in [("notes.jpg", "not an image"), ("empty.mp4", "empty"), ("missing.png", "not found")]:
        assert by_name[bad]["verdict"] == "error" and words in by_name[bad]["error"], by_name[bad]
    clip = by_name["clip.mp4"]
    assert clip["kind"] == "video" and len(clip["frames"]) == 12
    assert clip["frames"][1]["t"] == pytest.approx(0.04, abs=1e-3)
    with Image.open(out / by_name["astronaut.png"]["mask"]) as mask:
        assert mask.size == (512, 512) and mask.mode == "L"  # the input's size
    with Image.open(out / by_name["grey.jpg"]["mask"]) as mask:
        assert mask.size == (256, 256)
    assert "7 items" in capsys.readouterr().out


def test_every_k_and_exit_status(inputs, tmp_path):
    out = tmp_path / "k"
    assert main(["scan", str(inputs / "clip.mp4"), str(inputs / "astronaut.png"), "--out", str(out), "--every", "4",
                 "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    clip = next(it for it in report["items"] if it["kind"] == "video")
    assert [f["t"] for f in clip["frames"]] == pytest.approx([0.0, 0.16, 0.32], abs=1e-3)
    with pytest.raises(SystemExit):
        main(["scan", "--out", str(out)])  # no PATH: argparse usage error
    assert main(["scan", str(inputs), "--out", str(out), "--every", "0"]) == 2


def test_python_dash_m(inputs, tmp_path):
    out = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "mtl", "scan", str(inputs / "notes.jpg"), "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert [it["verdict"] for it in report["items"]] == ["error"]
    assert "1 item: 1 error" in proc.stdout
