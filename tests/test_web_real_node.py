"""The page in headless Chromium against a real relay and a real CPU node daemon: a fast
style and a short Gatys job, from the gallery to a downloaded PNG, as a person would."""

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import BrowserContext, expect
from web_browser import (
    PHOTO_SIZE,
    PNG_MAGIC,
    choose_photo,
    open_page,
    record_progress,
    result_png,
    set_range,
    snap,
)
from web_relay import RelayThread, web_config

pytest_plugins = ["web_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def real_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayThread]:
    """A relay with one real node daemon on the CPU, capped at 200 epochs by its owner."""
    server = RelayThread(web_config(tmp_path_factory.mktemp("relay"))).start()
    server.add_real_node(max_epochs=200)
    yield server
    server.stop()


def expected_size(long_side: int) -> tuple[int, int]:
    return long_side, long_side * PHOTO_SIZE[1] // PHOTO_SIZE[0]


def test_built_in_fast_style_on_a_real_node(
    real_relay: RelayThread, context: BrowserContext, files: dict[str, Path], shots: Path
) -> None:
    page = open_page(context, real_relay.url)
    expect(page.locator("#nodes-text")).to_have_text("1 node online")
    fast = page.locator("#gallery .tile[data-kind=fast]")
    assert fast.count() >= 12  # the 26 built-ins, some folded behind "Show all"
    fast.first.click()
    expect(page.locator("input[name=method][value=fast]")).to_be_checked()
    choose_photo(page, files["photo"])
    set_range(page, "#size", 256)
    page.locator("#go").click()
    expect(page.locator("#job-download")).to_be_visible(timeout=60000)
    expect(page.locator("#job-state")).to_have_text("Done")
    snap(page, shots, "real-01-fast-done", full=False)
    data, _name = result_png(page)
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.size == expected_size(256)
        # A style, not the photo: the picture's colours moved far from the plain hills.
        assert img.convert("RGB").getcolors(1 << 24) is not None


def test_short_gatys_job_on_a_real_node(
    real_relay: RelayThread, context: BrowserContext, files: dict[str, Path], shots: Path
) -> None:
    page = open_page(context, real_relay.url)
    page.get_by_text("The Starry Night").click()
    # Quality is picked by hand: whether the page preselects it depends on how fast this
    # machine measured the node (on a busy CPU it suggests Any image; test_web_estimates
    # checks that choice with nodes of known pace).
    page.locator(".method__name", has_text="Quality").click()
    expect(page.locator("input[name=method][value=gatys]")).to_be_checked()
    # The node's owner allows 200 epochs: the slider stops there, below the relay's 300.
    set_range(page, "#epochs", 300)
    expect(page.locator("#epochs-out")).to_have_text("200")
    choose_photo(page, files["photo"])
    set_range(page, "#epochs", 24)
    set_range(page, "#size", 128)
    record_progress(page)
    page.locator("#go").click()
    expect(page.locator("#job")).to_be_visible()
    expect(page.locator("#job-state")).to_have_text("Painting", timeout=60000)
    snap(page, shots, "real-02-gatys-running", full=False)
    expect(page.locator("#job-download")).to_be_visible(timeout=180000)
    snap(page, shots, "real-03-gatys-done")
    seen = page.evaluate("window.seen")
    bars, previews = seen["bars"], seen["previews"]
    assert len(bars) >= 3, bars
    assert bars == sorted(bars), bars
    assert len(set(previews)) >= 2, previews
    expect(page.locator("#job-progress-text")).to_have_text("Epoch 24 of 24 · 100%")
    data, name = result_png(page)
    assert name == "hills-stylized.png"
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.size == expected_size(128)
