"""Helpers for the browser tests: Debian's headless Chromium through Playwright, test
photos and files, opening the page, and screenshots."""

import io
import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Browser, BrowserContext, Page, Playwright

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
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def new_context(browser: Browser) -> BrowserContext:
    """A fresh browser profile (empty localStorage), downloads allowed, English."""
    return browser.new_context(
        viewport={"width": 1280, "height": 900}, accept_downloads=True, locale="en-US"
    )


def open_page(context: BrowserContext, url: str) -> Page:
    """Open the page and wait until styles and limits have loaded; fail on script errors."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector('body[data-ready="1"]')
    assert not errors, errors
    return page


def snap(page: Page, shots: Path, name: str, full: bool = True) -> Path:
    """Save a screenshot of the page."""
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path
