"""What a user of the app waits for: a photo's round trip through the served app, against the pipeline in-process.

    python bench/bench_served.py [--model SPEC] [--runs 20] [--browser]

Starts ``python app.py`` on a free local port in a subprocess (with this environment, so ``MTL_TORCH_THREADS`` and
``MTL_MODEL`` apply to it too), waits for it, and times ``--runs`` calls of its ``/analyze_image`` endpoint through
``gradio_client`` on the 1280x720 photo of ``bench_pipeline`` (one face, saved as a JPEG, uploaded each time), one
after another; then stops the app. ``analyze_image`` in this process on the same file is timed before and after, so
the difference is what serving adds: the upload, Gradio's queue and its worker thread, the outputs' encoding and
their downloads. Two more lines split that: the same call without downloading the outputs, and a call the app refuses
at once (no photo), Gradio's and the client's share alone. With ``--browser``, also a user's wait in a headless
Chromium (Debian's, driven by Playwright, as ``tests/test_browser.py``): from choosing the photo in the upload field
to the verdict and the annotated photo shown. Figures, not pass/fail; compare within a run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_pipeline import photo_720p  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summary(times_ms: list[float]) -> str:
    return f"median {statistics.median(times_ms):.1f} ms (p90 {np.percentile(times_ms, 90):.1f} ms, {len(times_ms)} runs)"


def start_app(port: int, model: str | None, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    if model:
        cmd += ["--model", model]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def connect(port: int, app: subprocess.Popen, log: Path, timeout_s: float = 180.0):
    from gradio_client import Client

    deadline = time.monotonic() + timeout_s
    while True:
        if app.poll() is not None:
            raise SystemExit(f"the app exited with code {app.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            return Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(log.parent / "downloads"))
        except Exception:
            if time.monotonic() > deadline:
                raise SystemExit(f"the app did not answer within {timeout_s:.0f} s; its log: {log}")
            time.sleep(1.0)


def time_calls(call, runs: int, warm: int = 0) -> list[float]:
    for _ in range(warm):
        call()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    return times


CHROMIUM = "/usr/bin/chromium"  # Debian's (Playwright's own download fails on the development machine)

# the photo's outputs are all shown: the verdict says so, and the annotated photo is a new <img> that has loaded
_SHOWN = """() => {
    const img = document.querySelector('#image-output img');
    const verdict = document.querySelector('#image-verdict');
    return img !== null && !img.dataset.seen && img.complete && img.naturalWidth > 0
        && verdict !== null && /face found/.test(verdict.innerText);
}"""


def time_browser(url: str, photo: Path, runs: int) -> list[float]:
    """A user's wait in a real browser (headless Chromium through Playwright): from choosing the photo in the upload
    field to the verdict and the annotated photo shown, each run a fresh upload of the same file."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(url, wait_until="networkidle", timeout=60_000)
            upload = page.locator("#image-input input[type=file]")

            def once():
                page.evaluate("() => document.querySelectorAll('#image-output img')"
                              ".forEach(img => { img.dataset.seen = '1'; })")
                upload.set_input_files(str(photo), timeout=60_000)
                page.wait_for_function(_SHOWN, timeout=60_000, polling=5)

            return time_calls(once, runs, warm=2)
        finally:
            browser.close()


def time_served(photo: Path, port: int, model: str | None, runs: int, work: Path,
                browser: bool = False) -> dict[str, list[float]]:
    """Round trips of the photo, with the outputs downloaded (as ``gradio_client`` does by default) and without;
    and of a call the app refuses at once (no photo), which is Gradio's and the client's share alone; with
    ``browser``, a user's wait in Chromium too."""
    from gradio_client import Client, handle_file

    log = work / "app.log"
    app = start_app(port, model, log)
    try:
        client = connect(port, app, log)
        browser_times = {"in a headless Chromium (upload to verdict and photo shown)":
                         time_browser(f"http://127.0.0.1:{port}/", photo, runs)} if browser else {}
        bare = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        for _ in range(3):
            _, _, _, _, details = client.predict(handle_file(str(photo)), api_name="/analyze_image")
        assert len(details["faces"]) == 1, f"the app found {len(details['faces'])} faces, expected one"

        def refused():
            try:
                bare.predict(None, api_name="/analyze_image")
            except Exception as e:  # the app's "Please upload ... a photo first"
                assert "photo" in str(e), e
            else:
                raise AssertionError("the app analysed no photo without complaint")

        return {
            "with the outputs downloaded": time_calls(
                lambda: client.predict(handle_file(str(photo)), api_name="/analyze_image"), runs),
            "results only (download_files=False)": time_calls(
                lambda: bare.predict(handle_file(str(photo)), api_name="/analyze_image"), runs),
            "a call refused at once (no photo)": time_calls(refused, runs),
            **browser_times,
        }
    finally:
        app.terminate()
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder or Hub id (default: $MTL_MODEL, else the shipped)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--browser", action="store_true",
                    help=f"also time the photo in a headless Chromium ({CHROMIUM}, through Playwright)")
    args = ap.parse_args()

    import cv2

    from mtl.pipeline import analyze_image, get_model, model_name

    model = get_model(args.model)
    threads = os.environ.get("MTL_TORCH_THREADS", "1")
    print(f"model {model_name(model)}; MTL_TORCH_THREADS={threads}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photo = work / "photo.jpg"
        cv2.imwrite(str(photo), cv2.cvtColor(photo_720p(), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        before = time_calls(lambda: analyze_image(photo, model), args.runs, warm=3)
        print(f"in-process analyze_image (a 1280x720 JPEG, one face), before: {summary(before)}")
        served = time_served(photo, free_port(), args.model, args.runs, work, browser=args.browser)
        after = time_calls(lambda: analyze_image(photo, model), args.runs)
        print(f"in-process analyze_image, after:                         {summary(after)}")
        in_process = statistics.median(before + after)
        for what, times in served.items():
            print(f"served /analyze_image through gradio_client, {what}: {summary(times)}   "
                  f"{statistics.median(times) / in_process:.2f}x in-process")


if __name__ == "__main__":
    main()
