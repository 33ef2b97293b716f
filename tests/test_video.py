"""mtl.video and analyze_video on short clips written here (the astronaut panned, with a tone as audio)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from mtl.pipeline import InputError, analyze_video, default_batch_size, get_model
from mtl.video import VideoWriter, iter_frames, prefetch, probe
from tests.media import write_clip

SHARED_VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "videos"


@pytest.fixture(scope="module")
def model():
    return get_model()


def streams(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return {"video": (v.codec_context.name, v.codec_context.pix_fmt, v.codec_context.width,
                          v.codec_context.height), "frames": frames,
                "audio": [s.codec_context.name for s in c.streams.audio]}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clips") / "astronaut.mp4", n=30)


def test_probe_and_stream(clip):
    info = probe(clip)
    assert (info.width, info.height, info.has_audio) == (256, 256, True)
    assert info.fps == pytest.approx(25) and info.duration == pytest.approx(1.2, abs=0.1)
    frames = list(iter_frames(clip, every=4))
    assert [f.index for f in frames] == [0, 4, 8, 12, 16, 20, 24, 28]
    assert frames[1].t == pytest.approx(4 / 25, abs=1e-3) and frames[0].rgb.shape == (256, 256, 3)
    every = list(iter_frames(clip, every=4, decode_all=True))
    assert len(every) == 30 and sum(f.sampled for f in every) == 8


def test_analyze_video_writes_playable_clip_with_audio(model, clip, tmp_path):
    out = tmp_path / "annotated.mp4"
    v = analyze_video(clip, model, out_path=out, batch_size=8)
    assert len(v.frames) == 30 and v.frames_decoded == 30
    assert v.frames_without_face == 0 and len(v.tracks) == 1  # one face, followed across the pan
    ps = [f.p_fake for f in v.frames]
    assert v.p_fake == pytest.approx(float(np.mean(ps)))
    assert v.verdict == ("fake" if v.p_fake > model.threshold else "real")
    if v.verdict != "fake":
        assert v.method is None
    s = streams(out)
    assert s["video"] == ("h264", "yuv420p", 256, 256) and s["frames"] == 30 and s["audio"] == ["aac"]
    assert probe(out).duration == pytest.approx(probe(clip).duration, abs=0.1)
    d = v.to_dict()
    assert [f["t"] for f in d["frames"]] == pytest.approx([i / 25 for i in range(30)], abs=1e-3)


class _CountingModel:
    """The shipped model, recording how many faces each pass of it gets."""

    def __init__(self, model):
        self.model, self.passes = model, []
        self.threshold, self.name = model.threshold, "counting"

    def predict(self, x, precision="auto"):
        self.passes.append(len(x))
        return self.model.predict(x, precision)


def test_faces_pass_through_the_model_in_batches_of_the_default_size(model, clip):
    counting = _CountingModel(model)
    v = analyze_video(clip, counting)  # batch_size left to default_batch_size()
    step = default_batch_size()
    assert sum(counting.passes) == 30 and max(counting.passes) <= step and counting.passes[0] == step
    # a face scores the same whatever the batch it went through (float rounding aside)
    wide = analyze_video(clip, model, batch_size=16)
    assert [f.p_fake for f in v.frames] == pytest.approx([f.p_fake for f in wide.frames], abs=1e-4)
    with pytest.raises(ValueError, match="batch_size"):
        analyze_video(clip, model, batch_size=0)


def test_a_photo_with_many_faces_is_scored_in_passes(model):
    from skimage.data import astronaut

    from mtl.faces import crop_face
    from mtl.pipeline import _predict_crops, find_faces

    rgb = astronaut()
    crops = [crop_face(rgb, b) for b in find_faces(rgb)] * 5  # five copies of the one face
    counting = _CountingModel(model)
    _predict_crops(counting, crops)  # as analyze_image calls it
    assert sum(counting.passes) == 5 and max(counting.passes) == min(5, default_batch_size())
    counting.passes.clear()
    chunked = _predict_crops(counting, crops, batch_size=2)
    assert counting.passes == [2, 2, 1]
    whole = _predict_crops(model, crops, batch_size=len(crops))
    assert [r[0] for r in chunked] == pytest.approx([r[0] for r in whole], abs=1e-4)
    assert all(np.abs(a[3] - b[3]).max() < 1e-3 for a, b in zip(chunked, whole))


def test_every_kth_frame_and_held_annotation(model, clip, tmp_path):
    out = tmp_path / "k.mp4"
    v = analyze_video(clip, model, every=3, detect_every=2, out_path=out)
    assert [f.index for f in v.frames] == list(range(0, 30, 3))
    assert streams(out)["frames"] == 30  # every input frame is written, annotations held between analysed ones
    first = next(iter_frames(out))
    src = next(iter_frames(clip))
    assert np.abs(first.rgb.astype(int) - src.rgb.astype(int)).max() > 100  # the box was drawn


def test_odd_size_and_no_audio(model, tmp_path):
    src = write_clip(tmp_path / "odd.mp4", n=10, audio=False, side=254)
    # crop to an odd width by re-encoding through the writer itself
    odd = tmp_path / "odd2.mp4"
    with VideoWriter(odd, 253, 254, 25) as w:
        for f in iter_frames(src):
            w.write(np.ascontiguousarray(f.rgb[:, :253]), f.t)
    info = probe(odd)
    assert (info.width, info.height) == (254, 254) and not info.has_audio  # padded to even for yuv420p
    v = analyze_video(odd, model, out_path=tmp_path / "o.mp4")
    assert len(v.frames) == 10 and streams(tmp_path / "o.mp4")["audio"] == []


def test_video_without_a_face(model, tmp_path):
    clip = write_clip(tmp_path / "noface.mp4", n=12, audio=False, faceless=True)
    v = analyze_video(clip, model, out_path=tmp_path / "nf.mp4")
    assert v.verdict == "no_face" and v.p_fake is None and v.frames_without_face == 12 and v.method is None
    assert "no face" in v.summary


def test_bad_videos(model, clip, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    with pytest.raises(InputError, match="not a readable video"):
        analyze_video(text, model)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        analyze_video(empty, model)
    with pytest.raises(InputError, match="not found"):
        analyze_video(tmp_path / "missing.mp4", model)
    with pytest.raises(InputError, match="limit is 1 s"):
        analyze_video(clip, model, max_duration=1.0)
    # cut in half: the index (moov) written at the end is lost
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    out = tmp_path / "cut-annotated.mp4"
    with pytest.raises(InputError, match="truncated"):
        analyze_video(cut, model, out_path=out)
    assert not out.exists()


def test_truncated_faststart_clip_keeps_what_decodes(model, tmp_path):
    clip = write_clip(tmp_path / "fs.mp4", n=30, audio=False)
    fs = tmp_path / "faststart.mp4"
    with av.open(str(clip)) as src, av.open(str(fs), "w", options={"movflags": "+faststart"}) as dst:
        s = dst.add_stream_from_template(src.streams.video[0])
        for p in src.demux(src.streams.video[0]):
            if p.dts is not None:
                p.stream = s
                dst.mux(p)
    data = fs.read_bytes()
    cut = tmp_path / "fs-cut.mp4"
    cut.write_bytes(data[: len(data) - 2500])  # the last packets (P frames of a few hundred bytes each) are lost
    v = analyze_video(cut, model)
    assert 0 < len(v.frames) < 30
    assert any("breaks off" in n for n in v.notes), v.notes


def test_prefetch_passes_errors_and_stops_early():
    def gen():
        yield 1
        yield 2
        raise RuntimeError("boom")

    it = prefetch(gen())
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(RuntimeError, match="boom"):
        next(it)
    endless = prefetch(iter(range(10**9)), maxsize=2)
    assert next(endless) == 0
    endless.close()  # the reader thread must stop instead of running on


@pytest.mark.slow
def test_shared_clip_with_several_faces(model, tmp_path):
    clip = SHARED_VIDEOS / "face_recognition_short_hamilton_clip.mp4"
    if not clip.exists():
        pytest.skip(f"../shared is absent ({clip} not found): real clips are only on the project's machines")
    v = analyze_video(clip, model, every=5, out_path=tmp_path / "h.mp4")
    assert max(f.n_faces for f in v.frames) >= 2
    assert streams(tmp_path / "h.mp4")["audio"] == ["aac"]
