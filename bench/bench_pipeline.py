"""End-to-end pipeline benchmarks (figures, not pass/fail tests).

    python bench/bench_pipeline.py [--model SPEC] [--runs 30] [--frames 150] [--skip-memory] [--concurrent 2]
                                   [--video-batch 16 8 4 2 1]

1. image: median latency of ``analyze_image`` on a 1280x720 photo with one face (the astronaut on a wide canvas);
2. video: frames per second of ``analyze_video`` on a 720p clip, every frame analysed and the annotated clip written
   (a generated pan over the astronaut; plus the 720p clip in ../shared when present), with the faces batched as
   the app does or, with ``--video-batch``, by each size given;
3. with ``--concurrent N``: photos per second and median latency of N threads calling ``analyze_image`` at once
   (the app serves two photo requests at a time), against one thread in the same run, and whether every concurrent
   result equals the sequential one;
4. memory: peak resident memory of a fresh process analysing the longest clip in ../shared/data/videos (every frame,
   annotated clip written), to show that streaming keeps it flat.

Targets on 2 cores: image <= 50 ms median, video >= 25 frames/s at 720p, peak memory <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_VIDEOS = ROOT / ".." / "shared" / "data" / "videos"

TARGET_IMAGE_MS = 50.0
TARGET_VIDEO_FPS = 25.0
TARGET_PEAK_GB = 1.5


def photo_720p() -> np.ndarray:
    import cv2
    import skimage.data

    face = cv2.resize(skimage.data.astronaut(), (720, 720), interpolation=cv2.INTER_CUBIC)
    canvas = cv2.resize(cv2.GaussianBlur(face, (0, 0), 25), (1280, 720))
    canvas[:, 280:1000] = face
    return canvas


def write_720p_clip(path: Path, frames: int, fps: int = 25) -> Path:
    from mtl.video import VideoWriter

    base = photo_720p()
    wide = np.concatenate([base[:, :200][:, ::-1], base, base[:, -200:][:, ::-1]], axis=1)
    with VideoWriter(path, 1280, 720, fps, preset="veryfast") as w:
        for i in range(frames):
            x = int(200 + 120 * np.sin(2 * np.pi * i / max(frames, 1)))
            w.write(np.ascontiguousarray(wide[:, x:x + 1280]), i / fps)
    return path


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def bench_image(model, runs: int) -> float:
    from mtl.pipeline import analyze_image

    img = photo_720p()
    r = analyze_image(img, model)
    assert len(r.faces) == 1, f"expected one face, found {len(r.faces)}"
    for _ in range(3):
        analyze_image(img, model)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        analyze_image(img, model)
        times.append((time.perf_counter() - t) * 1000)
    med = statistics.median(times)
    print(f"image  1280x720, 1 face, analyze_image: median {med:.1f} ms (p90 {np.percentile(times, 90):.1f} ms, "
          f"{runs} runs)   target <= {TARGET_IMAGE_MS:.0f} ms: {verdict(med <= TARGET_IMAGE_MS)}")
    return med


def bench_concurrent(model, runs: int, threads: int) -> float:
    """Photos per second with ``threads`` callers at once, against one caller; the results must not change."""
    from concurrent.futures import ThreadPoolExecutor

    from mtl.pipeline import analyze_image

    img = photo_720p()
    ref = [f.p_fake for f in analyze_image(img, model).faces]

    def call(_):
        t = time.perf_counter()
        r = analyze_image(img, model)
        return (time.perf_counter() - t) * 1000, [f.p_fake for f in r.faces]

    rates = {}
    for n in (1, threads):
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(call, range(2 * n)))  # warm every thread
            t = time.perf_counter()
            out = list(pool.map(call, range(runs)))
            dt = time.perf_counter() - t
        rates[n] = runs / dt
        same = all(np.allclose(p, ref, atol=1e-5) for _, p in out)
        print(f"photos {n} caller(s) at once: {rates[n]:.1f} photos/s, median latency "
              f"{statistics.median(ms for ms, _ in out):.1f} ms ({runs} photos); results "
              f"{'equal' if same else 'DIFFER FROM'} the sequential one's")
    print(f"       {threads} callers against 1: {rates[threads] / rates[1]:.2f}x the photos per second")
    return rates[threads]


def bench_video(model, clip: Path, label: str, batch_size: int | None = None) -> float:
    from mtl.pipeline import analyze_video

    with tempfile.TemporaryDirectory() as d:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        v = analyze_video(clip, model, every=1, out_path=Path(d) / "annotated.mp4", max_duration=None,
                          batch_size=batch_size)
        dt = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    fps = v.frames_decoded / dt
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if batch_size is not None:
        label += f", faces batched by {batch_size}"
    print(f"video  {label}: {v.frames_decoded} frames in {dt:.2f} s = {fps:.1f} frames/s (every frame analysed, "
          f"annotated clip written)   target >= {TARGET_VIDEO_FPS:.0f}: {verdict(fps >= TARGET_VIDEO_FPS)}")
    # Wall-clock figures depend on what else the machine runs; CPU time per frame does not.
    print(f"       CPU time {cpu / v.frames_decoded * 1000:.1f} ms/frame over all threads "
          f"(at most {v.frames_decoded / (cpu / (os.cpu_count() or 1)):.0f} frames/s on {os.cpu_count()} idle cores)")
    return fps


def bench_memory(model_spec: str | None) -> float | None:
    clips = sorted(SHARED_VIDEOS.glob("*.mp4"), key=lambda p: _duration(p)) if SHARED_VIDEOS.is_dir() else []
    if not clips:
        print("memory skipped: ../shared/data/videos is absent")
        return None
    longest = clips[-1]
    code = (
        "import sys, time, resource, tempfile, json; sys.path.insert(0, %r)\n"
        "from mtl.pipeline import analyze_video, get_model\n"
        "m = get_model(%r)\n"
        "d = tempfile.mkdtemp(); t = time.perf_counter()\n"
        "v = analyze_video(%r, m, out_path=d + '/a.mp4', max_duration=None)\n"
        "print(json.dumps({'frames': v.frames_decoded, 's': time.perf_counter() - t,"
        " 'rss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n"
    ) % (str(ROOT), model_spec, str(longest))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    gb = res["rss_kb"] / 1024 ** 2
    print(f"memory {longest.name} ({_duration(longest):.0f} s, {res['frames']} frames, "
          f"{res['frames'] / res['s']:.1f} frames/s): peak RSS {gb:.2f} GB   target <= {TARGET_PEAK_GB} GB: "
          f"{verdict(gb <= TARGET_PEAK_GB)}")
    return gb


def _duration(p: Path) -> float:
    from mtl.video import probe

    return probe(p).duration


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder or Hub id (default: the shipped one)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--frames", type=int, default=150, help="length of the generated 720p clip")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--video-batch", type=int, nargs="+", metavar="N",
                    help="time the videos with each of these batch sizes (default: analyze_video's)")
    ap.add_argument("--concurrent", type=int, default=0, metavar="N",
                    help="also time N photo requests at once (the app allows 2), against one")
    args = ap.parse_args()
    import torch

    from mtl.pipeline import get_model, model_name

    model = get_model(args.model)
    print(f"model {model_name(model)}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other work on the machine slows wall times)")
    bench_image(model, args.runs)
    if args.concurrent > 1:
        bench_concurrent(model, args.runs, args.concurrent)
    real = SHARED_VIDEOS / "LivePortrait_d13.mp4"
    with tempfile.TemporaryDirectory() as d:
        clip = write_720p_clip(Path(d) / "pan720.mp4", args.frames)
        for batch in args.video_batch or [None]:
            bench_video(model, clip, f"1280x720 generated pan, {args.frames} frames", batch)
            if real.exists():
                bench_video(model, real, "720x1280 ../shared LivePortrait_d13.mp4", batch)
    if not args.skip_memory:
        bench_memory(args.model)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GB")


if __name__ == "__main__":
    main()
