"""The Gradio app driven through gradio_client, launched in-process on 127.0.0.1 on a free port."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from tests.media import free_port  # noqa: E402


@pytest.fixture(scope="module")
def app_module():
    import app

    return app


@pytest.fixture(scope="module")
def client(app_module, tmp_path_factory):
    port = free_port()
    app_module.demo.queue(default_concurrency_limit=1).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True,
        max_file_size="2mb")
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False,
                     download_files=str(tmp_path_factory.mktemp("downloads")))
    finally:
        app_module.demo.close()


def _expect_error(client, words: str, *args, api_name: str):
    with pytest.raises(Exception) as e:
        client.predict(*args, api_name=api_name)
    assert words in str(e.value), str(e.value)


def test_named_endpoints(client):
    info = client.view_api(print_info=False, return_format="dict")
    assert set(info["named_endpoints"]) == {"/analyze_image", "/analyze_video"}


def test_analyze_astronaut(client, app_module):
    photo = app_module.EXAMPLE_IMAGES[0]
    annotated, verdict, method, gallery, details = client.predict(handle_file(photo), api_name="/analyze_image")
    with Image.open(annotated) as im:
        assert im.size == (512, 512) and im.format == "JPEG"  # written by the app, not re-encoded by Gradio
    assert len(details["faces"]) == 1 and details["verdict"] in ("fake", "real")
    p = details["p_fake"]
    word = "manipulated" if details["verdict"] == "fake" else "real"
    assert f"likely {word} (p={p:.2f})" in verdict.lower()
    assert len(gallery) == 2  # the crop and its region
    for item in gallery:
        with Image.open(item["image"]) as im:  # gradio_client: {"image": path, "caption": ...}
            assert im.size == (256, 256) and im.format == "JPEG"
    if details["verdict"] == "real":
        assert details["method"] is None


def test_forged_examples_exist_and_run(client, app_module):
    forged = [p for p in app_module.EXAMPLE_IMAGES if "astronaut_" in Path(p).name]
    assert forged, "the forge made no example"
    _, verdict, _, _, details = client.predict(handle_file(forged[0]), api_name="/analyze_image")
    assert len(details["faces"]) == 1 and "likely" in verdict.lower()


def _png_header_only(path, width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_bad_images_get_clear_messages_and_the_app_keeps_serving(client, app_module, tmp_path):
    text = tmp_path / "holiday.jpg"
    text.write_text("just some text\n")
    _expect_error(client, "not an image", handle_file(str(text)), api_name="/analyze_image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    _expect_error(client, "the file is empty", handle_file(str(empty)), api_name="/analyze_image")
    _expect_error(client, "limit is 50 MP", handle_file(str(_png_header_only(tmp_path / "big.png", 20000, 20000))),
                  api_name="/analyze_image")
    big = tmp_path / "noise.png"  # over the 2 MB upload limit of this test server
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 2_000_000
    _expect_error(client, "exceeds the maximum file size", handle_file(str(big)), api_name="/analyze_image")
    one = tmp_path / "one.png"
    Image.new("RGB", (1, 1)).save(one)
    _, verdict, method, gallery, details = client.predict(handle_file(str(one)), api_name="/analyze_image")
    assert "no face" in verdict.lower() and details["verdict"] == "no_face" and gallery == []
    cmyk = tmp_path / "cmyk.jpg"
    with Image.open(app_module.EXAMPLE_IMAGES[0]) as im:
        im.convert("CMYK").save(cmyk)
    _, verdict, _, _, details = client.predict(handle_file(str(cmyk)), api_name="/analyze_image")
    assert len(details["faces"]) == 1
    # and the next normal request still works
    _, _, _, _, details = client.predict(handle_file(app_module.EXAMPLE_IMAGES[0]), api_name="/analyze_image")
    assert len(details["faces"]) == 1


def test_video_endpoint(client, app_module, tmp_path):
    clip = app_module.EXAMPLE_VIDEOS[0]
    out, plot, verdict, method, details = client.predict(handle_file(clip), 2, api_name="/analyze_video")
    video = out["video"] if isinstance(out, dict) else out
    assert Path(video).is_file() and Path(video).suffix == ".mp4"
    assert details["frames_analysed"] == 38  # 75 frames, every 2nd
    assert "likely" in verdict.lower() and "mean over" in verdict
    assert plot is not None


def test_bad_videos(client, app_module, tmp_path, monkeypatch):
    clip = Path(app_module.EXAMPLE_VIDEOS[0])
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:4000])
    _expect_error(client, "truncated", handle_file(str(cut)), 1, api_name="/analyze_video")
    text = tmp_path / "film.mp4"
    text.write_text("this is not a film\n" * 10)
    _expect_error(client, "not a readable video", handle_file(str(text)), 1, api_name="/analyze_video")
    monkeypatch.setattr(app_module, "MAX_VIDEO_SECONDS", 1.0)
    _expect_error(client, "up to 1 s", handle_file(str(clip)), 1, api_name="/analyze_video")


def test_about_describes_the_loaded_model(app_module):
    model = app_module.get_model()
    text = app_module.about_text()
    assert f"**Model:** `{model.name}`" in text and f"`{model.encoder_name}`" in text
    assert f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters" in text
    assert f"**{model.threshold:.2f}**" in text


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files through Linux's /proc/self/fd")
def test_handlers_leave_no_file_open(app_module):
    import gc
    import os

    def open_files() -> int:
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    app_module.run_image(app_module.EXAMPLE_IMAGES[0])  # warm: the model, the detector, their threads
    app_module.run_video(app_module.EXAMPLE_VIDEOS[0], 5, progress=lambda *a, **k: None)
    before = open_files()
    for _ in range(3):
        annotated, *_ = app_module.run_image(app_module.EXAMPLE_IMAGES[0])
        clip, *_ = app_module.run_video(app_module.EXAMPLE_VIDEOS[0], 5, progress=lambda *a, **k: None)
        assert Path(annotated).is_file() and Path(clip).is_file()
    assert open_files() == before
