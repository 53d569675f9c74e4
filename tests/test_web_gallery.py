"""The public gallery on the page, in headless Chromium against a real relay with a fake
node: share a job at submit, see it in the gallery (English, Chinese, phone width), report
it, withdraw it from the job view. Each step leaves a screenshot."""

from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect
from relay_harness import FakeNode
from web_browser import choose_photo, open_page, snap
from web_relay import RelayThread

from relay.api import SERVICE

pytest_plugins = ["web_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def settle(relay: RelayThread) -> None:
    """Wait until the relay has made the shared job's thumbnail."""
    relay.run(relay.app[SERVICE].showcase.settled())


def share_a_job(page: Page, files: dict[str, Path]) -> None:
    page.locator(".tile", has_text="Candy").click()
    choose_photo(page, files["photo"])
    expect(page.locator("#share")).not_to_be_checked()  # off unless the person asks
    expect(page.locator("#share-style-row")).to_be_hidden()
    page.locator("#share").check()
    expect(page.locator("#share-style-row")).to_be_visible()
    page.locator("#go").click()
    expect(page.locator("#job-download")).to_be_visible(timeout=15000)
    expect(page.locator("#job-share")).to_have_text("Remove from the gallery")


def test_share_see_report_and_withdraw(
    relay: RelayThread, node: FakeNode, context: BrowserContext, files: dict[str, Path], shots: Path
) -> None:
    page = open_page(context, relay.url)
    share_a_job(page, files)
    settle(relay)
    page.reload()
    page.wait_for_selector('body[data-ready="1"]')
    tiles = page.locator("#showcase-grid .showcase__item")
    expect(tiles).to_have_count(1)
    tile = tiles.first
    expect(tile.locator("img")).to_have_attribute("loading", "lazy")
    expect(tile).to_contain_text("Candy")
    expect(tile).to_contain_text("Fast")
    link = tile.locator("a.showcase__pic")
    href = link.get_attribute("href") or ""
    assert href.startswith("/api/gallery/") and href.endswith("/image")
    job_id = page.evaluate("location.hash").removeprefix("#job=")
    assert job_id not in href
    page.locator("#showcase").scroll_into_view_if_needed()
    expect(tile.locator("img")).to_have_js_property("complete", True)
    snap(page, shots, "gallery-01-en")

    page.locator("#lang").select_option("zh-CN")
    expect(page.locator("#showcase-h")).to_have_text("公共画廊")
    expect(tile.locator(".showcase__report")).to_have_text("举报")
    snap(page, shots, "gallery-02-zh")
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#showcase").scroll_into_view_if_needed()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    snap(page, shots, "gallery-03-phone-zh", full=False)
    page.locator("#lang").select_option("en")

    tile.locator(".showcase__report").click()
    expect(tile.locator(".showcase__report")).to_have_text("Reported, thank you")

    page.locator("#job-share").click()
    expect(page.locator("#job-share")).to_have_text("Share in the gallery")
    expect(page.locator("#showcase-grid .showcase__item")).to_have_count(0)
    expect(page.locator("#showcase-empty")).to_be_visible()
    snap(page, shots, "gallery-04-withdrawn")
