"""A real browser on the app: Debian's chromium, headless, driven by Playwright. Uploads the astronaut photo, reads the
verdict the page shows and saves a screenshot (under pytest's tmp_path; set MTL_SCREENSHOT_DIR to keep copies)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.media import free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]



@pytest.fixture(scope="module")
def url():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium) to run this test")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    import app

    port = free_port()
    app.demo.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=port,
                                                       prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        yield f"http://127.0.0.1:{port}/", app
    finally:
        app.demo.close()


def _keep(path: Path) -> None:
    keep = os.environ.get("MTL_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def test_upload_photo_and_read_verdict(url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    address, app = url
    photo = app.EXAMPLE_IMAGES[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(address, wait_until="domcontentloaded", timeout=60_000)
            page.locator("#image-input input[type=file]").set_input_files(photo, timeout=60_000)
            verdict = page.locator("#image-verdict")
            expect(verdict).to_contain_text(re.compile(r"likely (manipulated|real) \(p=\d\.\d\d\)", re.I),
                                            timeout=90_000)
            text = verdict.inner_text()
            expect(page.locator("#image-output img")).to_be_visible(timeout=30_000)
            shot = tmp_path / "app-image-tab.png"
            page.screenshot(path=str(shot), full_page=True)
            _keep(shot)
            assert shot.stat().st_size > 10_000
            assert "1 face found" in text

            # a text file named .jpg: a clear message, not a stack trace
            bad = tmp_path / "holiday.jpg"
            bad.write_text("not a photo\n")
            page.locator("#image-input input[type=file]").set_input_files(str(bad), timeout=60_000)
            expect(page.get_by_text("holiday.jpg: not an image this app can read").first).to_be_visible(
                timeout=60_000)
            expect(verdict).not_to_contain_text("face found", timeout=30_000)  # the last photo's verdict is gone

            # the About tab explains the probability
            page.get_by_role("tab", name="About").click()
            expect(page.get_by_text("What the probability means")).to_be_visible(timeout=30_000)
            about = tmp_path / "app-about-tab.png"
            page.screenshot(path=str(about), full_page=True)
            _keep(about)
        finally:
            browser.close()
