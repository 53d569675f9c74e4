"""Estimates in the page, in headless Chromium against a real relay whose only node is slow
(its advertised pace makes a Quality job take most of an hour): choosing a painting
preselects Any image, the Quality card says how long it would take, and a queued job says
how many jobs are ahead and when it should start."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect
from relay_harness import FakeNode
from web_browser import choose_photo, open_page, snap
from web_relay import RelayThread, web_config

pytest_plugins = ["web_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

# A CPU's pace: 200 epochs at 512 px take about 40 minutes.
SLOW = {"gatys": (0.5, 60.0), "arbitrary": (1.0, 6.0)}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayThread]:
    """A relay with one slow fake node (in real time it paints fast: 40 ms an epoch)."""
    server = RelayThread(web_config(tmp_path_factory.mktemp("relay"))).start()
    server.add_node(pace=SLOW, epoch_seconds=0.04)
    yield server
    server.stop()


@pytest.fixture
def node(relay: RelayThread) -> FakeNode:
    return relay.nodes[0][0]


def test_any_image_is_preselected_when_only_a_slow_node_is_online(
    relay: RelayThread, context: BrowserContext, shots: Path
) -> None:
    page = open_page(context, relay.url)
    expect(page.locator("#nodes-text")).to_have_text("1 node online")
    page.get_by_text("The Starry Night").click()
    expect(page.locator("input[name=method][value=arbitrary]")).to_be_checked()
    expect(page.locator("#m-gatys-eta")).to_contain_text("on the nodes online")
    expect(page.locator("#m-gatys-eta")).to_contain_text("min")
    expect(page.locator("#estimate")).to_contain_text("measured pace")
    snap(page, shots, "estimates-slow-node", full=False)


def test_a_queued_job_shows_jobs_ahead_and_when_it_starts(
    relay: RelayThread,
    node: FakeNode,
    context: BrowserContext,
    files: dict[str, Path],
    shots: Path,
) -> None:
    node.hold_at = 1  # the first job holds the node's one slot
    pages = []
    try:
        for _ in range(3):
            page = open_page(context, relay.url)
            page.get_by_text("The Starry Night").click()
            page.locator(".method__name", has_text="Quality").click()
            expect(page.locator("input[name=method][value=gatys]")).to_be_checked()
            choose_photo(page, files["photo"])
            page.locator("#go").click()
            expect(page.locator("#job")).to_be_visible()
            pages.append(page)
        # The third waits behind the second, which waits for the held first.
        status = pages[2].locator("#job-status")
        expect(status).to_contain_text("Jobs ahead: 1 · starts in about")
        expect(pages[1].locator("#job-status")).to_contain_text("Jobs ahead: 0 · starts in about")
        snap(pages[2], shots, "estimates-queued", full=False)
    finally:
        node.release()
        node.hold_at = None
