"""Live mode in headless Chromium with a fake camera (`--use-fake-device-for-media-stream`),
streaming through a real relay and a real CPU node daemon: frames painted beside the
camera with the page's own frame rate and delay, a style switch without stopping, a snap
to a full-size job, stop; at phone width and in Chinese; and the clear word when no node
can paint live. Screenshots go to the shots folder (`STYLERELAY_SHOTS` to keep them)."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from web_browser import CHROMIUM, CHROMIUM_ARGS, launch, new_context, open_page, snap
from web_relay import RelayThread, web_config

pytest_plugins = ["web_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium with a fake camera that needs no permission prompt."""
    with sync_playwright() as p:
        launch(p).close()  # skips where Chromium is not installed
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + CAMERA_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def live_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayThread]:
    """A relay with one real CPU node of two slots (live sessions may hold one)."""
    server = RelayThread(web_config(tmp_path_factory.mktemp("relay"))).start()
    server.add_real_node(slots=2)
    yield server
    server.stop()


def counters(page: Page) -> dict[str, Any]:
    stats: dict[str, Any] = page.evaluate("({...window.stylerelayLive})")
    return stats


def wait_painted(page: Page, at_least: int, timeout: float = 60.0) -> None:
    """Until the page has shown `at_least` painted frames (read by polling: the page's
    Content-Security-Policy forbids the eval that `wait_for_function` needs)."""
    deadline = time.monotonic() + timeout
    while counters(page).get("painted", 0) < at_least:
        assert time.monotonic() < deadline, (
            f"{counters(page)}; {page.locator('#live-status').text_content()}"
        )
        page.wait_for_timeout(100)


def start_live(page: Page, size: str = "160") -> None:
    page.locator("#live-open").click()
    expect(page.locator("#live")).to_be_visible()
    page.locator("#live-size").select_option(size)
    page.locator("#live-start").click()


def test_the_camera_painted_live_through_a_real_node(
    live_relay: RelayThread, browser: Browser, shots: Path
) -> None:
    context = new_context(browser)
    try:
        page = open_page(context, live_relay.url)
        page.locator("#live-open").click()
        styles = page.locator("#live-style option")
        assert styles.count() >= 12  # the built-in fast styles and the paintings
        assert styles.last.get_attribute("value") == "image"
        start_live(page)
        expect(page.locator("#live-status")).to_contain_text("Painting live on cpu-node")
        wait_painted(page, 12)
        stats = counters(page)
        # The page's own counters: frames painted, their size, a delay for each.
        assert stats["side"] <= 160 and stats["fps"] > 0
        assert len(stats["delays"]) >= 10 and stats["delay"] > 0
        expect(page.locator("#live-stats")).to_contain_text("frames/s")
        # The painted canvas holds the node's picture, not a blank one.
        size = page.eval_on_selector("#live-painted", "c => [c.width, c.height]")
        assert max(size) <= 160 and min(size) >= 16
        print(
            f"\nlive at 160 px: {stats['fps']:.1f} frames/s, median delay {stats['delay']:.0f} ms"
        )
        page.locator("#live").scroll_into_view_if_needed()
        snap(page, shots, "live-01-desktop", full=False)
        page.locator("#live").screenshot(path=str(shots / "live-01-desktop-panel.png"))

        # Another style without stopping: frames keep coming.
        before = stats["painted"]
        page.locator("#live-style").select_option(index=3)
        wait_painted(page, before + 6)

        # Snap: the current frame as a normal, full-size job under "My results".
        page.locator("#live-snap").click()
        expect(page.locator("#live-status")).to_contain_text("Snapped")
        expect(page.locator("#job")).to_be_visible()
        expect(page.locator("#job-download")).to_be_visible(timeout=90_000)

        page.locator("#live-stop").click()
        expect(page.locator("#live-status")).to_have_text("Stopped.")
        expect(page.locator("#live-start")).to_be_enabled()
        stopped = counters(page)["painted"]
        page.wait_for_timeout(500)
        assert counters(page)["painted"] <= stopped + 2  # at most those already in flight
    finally:
        context.close()


def test_live_at_phone_width_in_chinese(
    live_relay: RelayThread, browser: Browser, shots: Path
) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, locale="zh-CN"
    )
    try:
        page = open_page(context, live_relay.url)
        expect(page.locator("#live-open")).to_have_text("实时相机")
        start_live(page)
        wait_painted(page, 4)
        expect(page.locator("#live-stats")).to_contain_text("每秒")
        # Camera and painting side by side, inside the phone's width.
        raw = page.locator("#live-raw").bounding_box()
        painted = page.locator("#live-painted").bounding_box()
        assert raw is not None and painted is not None
        assert abs(raw["y"] - painted["y"]) < 2 and painted["x"] > raw["x"]
        assert painted["x"] + painted["width"] <= 390
        page.locator("#live").scroll_into_view_if_needed()
        snap(page, shots, "live-02-phone-zh", full=False)
        page.locator("#live-stop").click()
        expect(page.locator("#live-status")).to_have_text("已停止。")
    finally:
        context.close()


def test_live_says_when_no_node_can_paint_live(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser, shots: Path
) -> None:
    server = RelayThread(web_config(tmp_path_factory.mktemp("relay"))).start()
    server.add_real_node(no_live=True)  # its owner refuses live sessions
    context = new_context(browser)
    try:
        page = open_page(context, server.url)
        start_live(page)
        expect(page.locator("#live-status")).to_have_text(
            "No node can paint live right now. Try again later, or paint a photo instead."
        )
        expect(page.locator("#live-start")).to_be_enabled()
        page.locator("#live").screenshot(path=str(shots / "live-03-no-node.png"))
    finally:
        context.close()
        server.stop()
