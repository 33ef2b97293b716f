"""Reading and writing clips with PyAV: streaming decode, frame sampling, browser-playable H.264 output with the
original audio kept.

Frames are decoded one at a time (a small read-ahead queue at most), so memory does not grow with the clip's length.
Decoding and encoding each run on their own thread: FFmpeg releases the GIL, so the two cores stay busy while the
main thread detects faces and runs the model.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

DEFAULT_MAX_DURATION_S = 600.0  # ten minutes; the app passes a lower limit of its own
# Audio codecs an MP4 can carry as they are (copied packet by packet, no re-encoding).
_MP4_AUDIO = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}


class InputError(ValueError):
    """An input the pipeline cannot use; the message is written for the person who supplied it."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    n_frames: int  # from the header, or duration x fps when the header has no count
    duration: float  # seconds
    has_audio: bool
    codec: str


@dataclass
class DecodedFrame:
    index: int  # 0-based position in the decoded stream
    t: float  # seconds from the start of the clip
    rgb: np.ndarray  # HxWx3 uint8
    sampled: bool = True  # index is a multiple of `every`


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p.name}: file not found")
    if p.is_dir():
        raise InputError(f"{p.name}: is a folder, not a video")
    if p.stat().st_size == 0:
        raise InputError(f"{p.name}: the file is empty")
    try:
        return av.open(str(p), mode="r")
    except av.FFmpegError as e:
        raise InputError(f"{p.name}: not a readable video ({_ffmpeg_reason(e)}); the file may be truncated or in a "
                         "format this app cannot read") from e


def _ffmpeg_reason(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).split(":")[-1].strip() or type(e).__name__


def _video_stream(container, name: str):
    if not container.streams.video:
        raise InputError(f"{name}: the file has no video track")
    return container.streams.video[0]


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    return fps if 0.5 < fps < 1000 else 25.0


def probe(path: str | os.PathLike) -> VideoInfo:
    """Header facts about a clip; raises InputError for anything that is not a readable video."""
    name = Path(path).name
    with _open(path) as c:
        s = _video_stream(c, name)
        fps = _fps(s)
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif c.duration is not None:
            duration = c.duration / 1e6
        else:
            duration = (s.frames or 0) / fps
        n = int(s.frames or 0) or int(round(duration * fps))
        w, h = s.codec_context.width, s.codec_context.height
        if not w or not h:
            raise InputError(f"{name}: the video track has no picture size (corrupt header?)")
        return VideoInfo(str(path), int(w), int(h), fps, n, duration, bool(c.streams.audio),
                         s.codec_context.name)


def iter_frames(path: str | os.PathLike, every: int = 1, decode_all: bool = False,
                warnings: list[str] | None = None) -> Iterator[DecodedFrame]:
    """Yield the clip's frames in order, streaming.

    every: frames whose index is a multiple of it are yielded (``sampled``); with decode_all the others are yielded
    too (``sampled=False``, so a writer can show every frame), else they are decoded but skipped.
    A file that breaks off part-way (truncated, corrupt packets) ends the stream early with a note in `warnings`;
    one with no decodable frame at all raises InputError.
    """
    if every < 1:
        raise ValueError("every must be >= 1")
    name = Path(path).name
    c = _open(path)
    n = 0
    try:
        s = _video_stream(c, name)
        s.thread_type = "AUTO"  # frame threads inside FFmpeg
        t0 = None
        broken: list[str] = []
        for frame in _decode(c, s, broken):
            t = float(frame.time) if frame.time is not None else n / _fps(s)
            if t0 is None:
                t0 = t
            want = n % every == 0
            if want or decode_all:
                yield DecodedFrame(n, max(0.0, t - t0), frame.to_ndarray(format="rgb24"), want)
            n += 1
        if broken:
            if n == 0:
                raise InputError(f"{name}: no frame could be decoded ({broken[0]}); the file is truncated or corrupt")
            if warnings is not None:
                warnings.append(f"the video breaks off after frame {n} ({broken[0]}); it may be truncated, the rest "
                                "was not analysed")
        if n == 0:
            raise InputError(f"{name}: the video has no decodable frame (truncated or empty)")
        listed = int(s.frames or 0)
        if not broken and warnings is not None and listed and n < listed - max(2, listed // 100):
            warnings.append(f"the video breaks off after frame {n} of the {listed} its header lists; it may be "
                            "truncated")
    finally:
        c.close()


def _decode(c, s, broken: list[str]) -> Iterator[av.VideoFrame]:
    """Decode a video stream, stopping at the first unreadable packet but still flushing the frames the decoder
    holds (with frame threading it holds several), so a clip that breaks off keeps everything before the break."""
    packets = c.demux(s)
    while True:
        try:
            pkt = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as e:
            broken.append(_ffmpeg_reason(e))
            break
        try:
            yield from s.decode(pkt)
        except av.FFmpegError as e:
            broken.append(_ffmpeg_reason(e))
            break
    else:  # pragma: no cover - while True only leaves through break
        pass
    try:
        yield from s.codec_context.decode(None)
    except av.FFmpegError:
        pass


def prefetch(it: Iterator, maxsize: int = 4) -> Iterator:
    """Run an iterator on a background thread, at most `maxsize` items ahead (exceptions are re-raised here)."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", done))
        except BaseException as e:  # handed to the consumer
            q.put(("error", e))

    th = threading.Thread(target=work, name="mtl-decode", daemon=True)
    th.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        th.join(timeout=5)


class VideoWriter:
    """Write RGB frames to a browser-playable MP4 (H.264, yuv420p, faststart), copying the audio of `audio_from`.

    Frames are converted and encoded on a background thread; `write` blocks only when that thread is a few frames
    behind. Use as a context manager, or call `close()`.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float,
                 audio_from: str | os.PathLike | None = None, crf: int = 23, preset: str = "superfast",
                 warnings: list[str] | None = None):
        self.path = str(path)
        self.width, self.height = int(width) + int(width) % 2, int(height) + int(height) % 2  # yuv420p needs even
        self.warnings = warnings if warnings is not None else []
        self._out = av.open(self.path, mode="w", format="mp4", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001)
        self._v = self._out.add_stream("libx264", rate=rate)
        self._v.width, self._v.height, self._v.pix_fmt = self.width, self.height, "yuv420p"
        self._v.codec_context.time_base = Fraction(1, 90000)
        self._v.options = {"crf": str(crf), "preset": preset, "tune": "zerolatency" if preset == "ultrafast" else ""}
        self._v.options = {k: v for k, v in self._v.options.items() if v}
        self._last_pts = -1
        self._audio_in = None
        self._a_out = None
        self._a_packets = None
        self._a_next = None
        if audio_from is not None:
            self._open_audio(audio_from)
        self._q: queue.Queue = queue.Queue(maxsize=6)
        self._error: BaseException | None = None
        self._th = threading.Thread(target=self._run, name="mtl-encode", daemon=True)
        self._th.start()
        self.frames_written = 0

    # audio -------------------------------------------------------------------------------------------------
    def _open_audio(self, src):
        try:
            c = av.open(str(src))
        except av.FFmpegError:
            return
        if not c.streams.audio:
            c.close()
            return
        a = c.streams.audio[0]
        if a.codec_context.name not in _MP4_AUDIO:
            self.warnings.append(f"the audio ({a.codec_context.name}) cannot go into an MP4 as it is; "
                                 "the annotated clip is silent")
            c.close()
            return
        self._audio_in = c
        self._a_in = a
        self._a_out = self._out.add_stream_from_template(a)
        v = c.streams.video[0] if c.streams.video else None
        # Frames are timed from the first video frame; shift audio by the same origin to stay in sync.
        self._t0 = float(v.start_time * v.time_base) if v is not None and v.start_time is not None else 0.0
        self._a_packets = c.demux(a)
        self._advance_audio()

    def _advance_audio(self):
        self._a_next = None
        try:
            for pkt in self._a_packets:
                if pkt.dts is None or pkt.size == 0:
                    continue
                self._a_next = pkt
                return
        except av.FFmpegError:
            self.warnings.append("the audio track breaks off early")
        self._a_next = None

    def _mux_audio_until(self, t: float | None):
        while self._a_next is not None:
            pkt = self._a_next
            pt = float(pkt.pts * pkt.time_base) - self._t0 if pkt.pts is not None else 0.0
            if t is not None and pt > t:
                return
            shift = int(round(self._t0 / pkt.time_base))
            if pkt.pts is not None:
                pkt.pts -= shift
            pkt.dts -= shift
            pkt.stream = self._a_out
            self._out.mux(pkt)
            self._advance_audio()

    # video -------------------------------------------------------------------------------------------------
    def write(self, rgb: np.ndarray, t: float) -> None:
        """Queue one HxWx3 uint8 RGB frame shown at t seconds."""
        if self._error is not None:
            raise self._error
        self._q.put((rgb, t))

    def _run(self):
        try:
            while True:
                item = self._q.get()
                if item is None:
                    break
                rgb, t = item
                h, w = rgb.shape[:2]
                if (w, h) != (self.width, self.height):
                    rgb = np.pad(rgb[: self.height, : self.width],
                                 ((0, max(0, self.height - h)), (0, max(0, self.width - w)), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                pts = int(round(t / self._v.codec_context.time_base))
                pts = max(pts, self._last_pts + 1)
                self._last_pts = pts
                frame.pts = pts
                frame.time_base = self._v.codec_context.time_base
                for pkt in self._v.encode(frame):
                    self._out.mux(pkt)
                if self._a_out is not None:
                    self._mux_audio_until(t)
                self.frames_written += 1
        except BaseException as e:
            self._error = e
            # keep draining so that producers never block forever
            while self._q.get() is not None:
                pass

    def close(self) -> None:
        self._q.put(None)
        self._th.join()
        try:
            if self._error is None:
                for pkt in self._v.encode(None):
                    self._out.mux(pkt)
                if self._a_out is not None:
                    self._mux_audio_until(None)
        finally:
            self._out.close()
            if self._audio_in is not None:
                self._audio_in.close()
        if self._error is not None:
            raise self._error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
