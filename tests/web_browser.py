"""Helpers for the browser tests: Debian's headless Chromium through Playwright, test
photos and files, opening the page, moving sliders, following a job, and screenshots, which
go to `$STYLERELAY_SHOTS` when set (to look at them). The fixtures are in `web_fixtures`.
"""

import io
import os
import re
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHOTO_SIZE = (400, 300)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Generous waits: CI shares two cores with other suites, and a loaded machine is slow, not wrong.
expect.set_options(timeout=20_000)


def photo_png(size: tuple[int, int] = PHOTO_SIZE) -> bytes:
    """A colourful test photo: a sky, a sun and hills."""
    w, h = size
    ramp = Image.linear_gradient("L").resize(size)
    red, green = ramp.point(lambda v: 90 + v // 3), ramp.point(lambda v: 140 + v // 4)
    img = Image.merge("RGB", (red, green, Image.new("L", size, 235)))
    draw = ImageDraw.Draw(img)
    draw.ellipse((w * 0.62, h * 0.12, w * 0.8, h * 0.36), fill=(255, 200, 60))
    hills = [(0, h), (0, h * 0.6), (w * 0.35, h * 0.45), (w * 0.7, h * 0.7), (w, h * 0.55), (w, h)]
    draw.polygon(hills, fill=(60, 130, 70))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def make_files(root: Path) -> dict[str, Path]:
    """Files a person might pick: a photo, a text file named like an image, a huge image."""
    photo = root / "hills.png"
    photo.write_bytes(photo_png())
    fake = root / "notes.png"
    fake.write_text("these are my notes, not a picture\n")
    big = root / "huge.png"
    # A real PNG, then padding past the 1 MB cap of the test relay.
    big.write_bytes(photo_png((64, 48)) + os.urandom(1_300_000))
    style = root / "my-style.png"
    style.write_bytes(photo_png((120, 120)))
    return {"photo": photo, "fake": fake, "big": big, "style": style}


def shots_dir(fallback: Path) -> Path:
    """`$STYLERELAY_SHOTS` when set (to look at the screenshots), else `fallback`."""
    chosen = os.environ.get("STYLERELAY_SHOTS")
    if not chosen:
        return fallback
    path = Path(chosen)
    path.mkdir(parents=True, exist_ok=True)
    return path


def launch(p: Playwright) -> Browser:
    """Debian's headless Chromium; skips the test where it is not installed."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run installs it, so CI must have it")
        pytest.skip(message)
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def new_context(browser: Browser) -> BrowserContext:
    """A fresh browser profile (empty localStorage), downloads allowed, English."""
    return browser.new_context(
        viewport={"width": 1280, "height": 900}, accept_downloads=True, locale="en-US"
    )


def open_page(context: BrowserContext, url: str) -> Page:
    """Open the page and wait until styles and limits have loaded; fail on script errors
    and on anything the Content-Security-Policy refused."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Chromium reports what the relay's Content-Security-Policy blocked on the console.
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.goto(url)
    page.wait_for_selector('body[data-ready="1"]')
    assert not errors, errors
    return page


def snap(page: Page, shots: Path, name: str, full: bool = True) -> Path:
    """Save a screenshot of the page."""
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


def set_range(page: Page, selector: str, value: int) -> None:
    """Move a slider as a person dragging it would (the browser clamps to min/max/step)."""
    page.eval_on_selector(
        selector, "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", str(value)
    )


def choose_photo(page: Page, path: Path) -> None:
    """Pick the photo through the file chooser, as a click on the button does."""
    with page.expect_file_chooser() as chooser:
        page.locator("label[for=photo]").click()
    chooser.value.set_files(str(path))


def shown_epoch(page: Page) -> int:
    text = page.locator("#job-progress-text").text_content() or ""
    match = re.search(r"Epoch (\d+) of", text)
    return int(match.group(1)) if match else 0


def wait_epoch(page: Page, at_least: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while (epoch := shown_epoch(page)) < at_least:
        status = page.locator("#job-status").text_content()
        assert time.monotonic() < deadline, f"stuck at epoch {epoch}: {status}"
        page.wait_for_timeout(50)
    return epoch


def result_png(page: Page) -> tuple[bytes, str]:
    """Click the download button; the file's bytes and its suggested name."""
    with page.expect_download() as download:
        page.locator("#job-download").click()
    return Path(download.value.path()).read_bytes(), download.value.suggested_filename


def record_progress(page: Page) -> None:
    """Note every bar value and preview a person sees, every 20 ms, in `window.seen`."""
    page.evaluate(
        """() => {
            window.seen = {bars: [], previews: []};
            setInterval(() => {
                const bar = document.getElementById("job-bar").value;
                const src = document.getElementById("job-result").getAttribute("src") || "";
                const {bars, previews} = window.seen;
                if (bar > 0 && bar < 100 && bars.at(-1) !== bar) bars.push(bar);
                if (src.includes("/preview") && previews.at(-1) !== src) previews.push(src);
            }, 20);
        }"""
    )
