"""The page shows the painting so far of a cancelled Gatys job (issue 12, "no painting
thrown away"): "stopped at epoch N of M" in both languages, and a download of the PNG.

In headless Chromium against a real relay whose fake node checkpoints as a real Gatys node
does (every few epochs, and once more as it stops). Kept apart from tests/test_checkpoints.py:
the browser's event loop would disturb that module's asyncio tests.
"""

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import BrowserContext, expect
from relay_harness import FakeNode
from web_browser import open_page, result_png, set_range, wait_epoch
from web_relay import RelayThread

from relay.api import SERVICE

pytest_plugins = ["web_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def checkpointing(node: FakeNode) -> Iterator[FakeNode]:
    node.checkpoints = True
    yield node
    node.checkpoints = False


def test_a_cancelled_job_shows_and_offers_its_painting_so_far(
    relay: RelayThread,
    checkpointing: FakeNode,
    context: BrowserContext,
    files: dict[str, Path],
) -> None:
    page = open_page(context, relay.url)
    page.get_by_text("Woman with a Hat").click()
    page.locator("#photo").set_input_files(str(files["photo"]))
    set_range(page, "#epochs", 200)
    page.locator("#go").click()
    reached = wait_epoch(page, 12)
    page.locator("#job-cancel").click()
    status = page.locator("#job-status")
    expect(status).to_contain_text("The job was cancelled.")
    job_id = checkpointing.offers[-1].job_id
    # The node's last checkpoint comes as it stops (its periodic ones are every 5 epochs).
    for _ in range(200):
        job = relay.call(lambda: relay.app[SERVICE].get(job_id))
        if (job.partial_epoch or 0) >= reached:
            break
        page.wait_for_timeout(50)
    assert job.partial_epoch is not None and reached <= job.partial_epoch < 200
    # The page asks for it again after the cancel, and shows it.
    expect(status).to_have_text(
        f"The job was cancelled. Stopped at epoch {job.partial_epoch} of 200.", timeout=15000
    )
    caption = page.locator("#job-result-caption")
    expect(caption).to_have_text(
        f"The painting so far: stopped at epoch {job.partial_epoch} of 200"
    )
    expect(page.locator("#job-result")).to_be_visible()
    expect(page.locator("#job-result")).to_have_attribute(
        "src", f"/api/jobs/{job_id}/partial?epoch={job.partial_epoch}"
    )
    download = page.locator("#job-download")
    expect(download).to_have_text("Download the painting so far")
    data, name = result_png(page)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and img.size == (job.width, job.height)
    assert name.endswith("-partial.png")

    # My results shows it too, in place of a result.
    card = page.locator(f".history__item[data-job='{job_id}']")
    expect(card.locator(f"img[src='/api/jobs/{job_id}/partial']")).to_be_visible()

    page.locator("#lang").select_option("zh-CN")
    expect(status).to_contain_text(f"停在第 {job.partial_epoch} 轮（共 200 轮）")
    expect(download).to_have_text("下载目前的画作")
