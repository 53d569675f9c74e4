"""Privacy in the page, in headless Chromium against a real relay with a fake node: the note
under the upload says where the photo goes and for how long, and "Delete now" on a finished
job of this browser deletes it on the relay and takes it off "My results"."""

from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect
from relay_harness import FakeNode
from web_browser import open_page, set_range, snap
from web_relay import RelayThread

from relay.api import SERVICE
from relay.errors import NotFound

pytest_plugins = ["web_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_privacy_note_and_delete_now(
    relay: RelayThread, node: FakeNode, context: BrowserContext, files: dict[str, Path], shots: Path
) -> None:
    page = open_page(context, relay.url)
    note = page.locator("#photo-privacy")
    expect(note).to_contain_text("volunteer's GPU node")
    expect(note).to_contain_text("24 hours")

    page.get_by_text("Woman with a Hat").click()
    page.locator("#photo").set_input_files(str(files["photo"]))
    set_range(page, "#epochs", 5)
    page.locator("#go").click()
    expect(page.locator("#job-download")).to_be_visible(timeout=20000)
    job_id = node.offers[-1].job_id
    service = relay.app[SERVICE]
    done = relay.call(lambda: service.get(job_id))
    item = page.locator("#history .history__item")
    expect(item).to_have_count(1)
    button = item.get_by_role("button", name="Delete now", exact=False)
    expect(button).to_be_visible()
    snap(page, shots, "delete-now-before")

    button.click()
    expect(item).to_have_count(0)
    expect(page.locator("#results-empty")).to_be_visible()
    expect(page.locator("#results-error")).to_be_hidden()
    snap(page, shots, "delete-now-after")

    def gone() -> bool:
        try:
            service.get(job_id)
        except NotFound:
            return True
        return False

    assert relay.call(gone)
    assert not relay.call(lambda: [sha for sha in done.files() if service.blobs.exists(sha)])
    # The page no longer lists it after a reload either.
    page.reload()
    expect(page.locator("#results-empty")).to_be_visible()
    expect(page.locator("#history .history__item")).to_have_count(0)

    # In Chinese the button and the note are translated.
    page.locator("#lang").select_option("zh-CN")
    expect(page.locator("#photo-privacy")).to_contain_text("志愿者")
    expect(page.locator("#photo-privacy")).to_contain_text("24 小时")
