"""The web app in a real browser: Debian's chromium, headless, driven by Playwright's Python package.

Run by ``make test-browser`` (which installs chromium with apt-get when it is missing); skipped elsewhere when
chromium or playwright is missing (``ANNOFREE_REQUIRE_BROWSER=1`` turns the skip into a failure). The screenshot
is saved as ``app.png`` in the test's temporary folder.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*"),  # gradio's use of pandas
]

CHROMIUM = os.environ.get("ANNOFREE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 60_000


def _missing(reason: str):
    if os.environ.get("ANNOFREE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (make test-browser needs it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"no chromium at {CHROMIUM} (apt-get install chromium chromium-driver)")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user data dir
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("gradio")
    import annofree
    from annofree.app import Limits, SegmentApp, serve, write_examples
    from tests.tiny import save_tiny_groupvit

    weights = save_tiny_groupvit(tmp_path_factory.mktemp("weights"))  # a small checkpoint made here
    app = SegmentApp(annofree.load(weights), limits=Limits(max_classes=20), short_side=64, title=str(weights))
    examples = write_examples(tmp_path_factory.mktemp("examples"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    blocks = serve(app, port=port, examples=examples, block=False, quiet=True)
    yield f"http://127.0.0.1:{port}/", examples
    blocks.close()


def _segment(page, image: Path, classes: str) -> str:
    """Upload ``image``, type ``classes``, press Segment; returns the status line once it changed."""
    status = page.locator("#status textarea")
    before = status.input_value()
    page.set_input_files("#image input[type=file]", str(image))
    page.locator("#classes textarea, #classes input").first.fill(classes)
    page.click("#run")
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        now = status.input_value()
        if now and now != before:
            return now
        page.wait_for_timeout(100)
    raise AssertionError(f"no answer within {TIMEOUT_MS} ms (status {before!r})")


def test_upload_classes_submit_shows_the_overlay_and_the_legend(browser_page, server, tmp_path):
    page = browser_page
    url, examples = server
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#run", timeout=TIMEOUT_MS)

    astronaut = next(path for path, _ in examples if path.stem == "astronaut")
    status = _segment(page, astronaut, "person, flag, wall")
    assert status.startswith("512x512 px, whole image"), status

    # The overlay image arrived and decoded, the legend lists every class with its share, the groups are shown.
    overlay = page.locator("#overlay img")
    overlay.wait_for(state="visible", timeout=TIMEOUT_MS)
    page.wait_for_function("document.querySelector('#overlay img').naturalWidth > 0", timeout=TIMEOUT_MS)
    assert page.evaluate("document.querySelector('#overlay img').naturalWidth") == 512
    legend = page.locator("#legend table.annofree-legend")
    legend.wait_for(state="visible", timeout=TIMEOUT_MS)
    rows = page.locator("#legend tr.annofree-row")
    assert [rows.nth(i).get_attribute("data-name") for i in range(rows.count())] == [
        "background", "person", "flag", "wall",
    ]  # fmt: skip
    shares = [float(t.rstrip("%")) for t in page.locator("#legend td.annofree-share").all_inner_texts()]
    assert sum(shares) == pytest.approx(100.0, abs=0.3)
    page.wait_for_function("document.querySelector('#groups img')?.naturalWidth > 0", timeout=TIMEOUT_MS)
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    assert (tmp_path / "app.png").stat().st_size > 10_000
    print(f"screenshot: {tmp_path / 'app.png'}")


def test_bad_requests_get_a_message_in_the_page_and_the_next_one_works(browser_page, server, tmp_path):
    page = browser_page
    url, examples = server
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#run", timeout=TIMEOUT_MS)

    notes = tmp_path / "notes.png"
    notes.write_text("a text file named like an image")
    assert "not an image" in _segment(page, notes, "cat, dog")

    scene = next(path for path, _ in examples if path.stem == "shapes_0")
    many = ", ".join(f"class {i}" for i in range(10_000))
    assert "10000 class names given; at most 20 are accepted" in _segment(page, scene, many)

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photo)
    assert _segment(page, photo, "circle, star, heart").startswith("64x48 px")
    rows = page.locator("#legend tr.annofree-row")
    assert rows.count() == 4 and rows.nth(1).get_attribute("data-name") == "circle"
    page.screenshot(path=str(tmp_path / "after_bad_requests.png"), full_page=True)
