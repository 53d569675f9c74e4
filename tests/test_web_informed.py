"""The page keeps people informed and heals itself, in headless Chromium against a real
relay with a fake node: progress on the tab, a notification asked for only before a long
job, the e-mail field, and a relay restart that the page recovers from without a reload.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect
from relay_harness import FakeNode
from web_browser import choose_photo, open_page, set_range, snap, wait_epoch
from web_relay import RelayThread, web_config

from relay.api import SERVICE

pytest_plugins = ["web_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

TITLE = "Stylerelay — turn a photo into a painting"
# Stands in for the browser's Notification API: what the page asked for and showed. The page
# is told it is not focused, as when the person waits in another tab.
FAKE_NOTIFICATION = """
window.notes = {asked: 0, shown: []};
let permission = "default";
class FakeNotification {
  constructor(title, options) { window.notes.shown.push({title, body: options.body}); }
  static get permission() { return permission; }
  static requestPermission() { window.notes.asked += 1; permission = "granted";
                               return Promise.resolve(permission); }
  close() {}
}
window.Notification = FakeNotification;
document.hasFocus = () => false;
// This browser has seen Quality jobs run slowly before, so they are estimated long.
try {
  if (!localStorage.getItem("stylerelay.speed")) {
    localStorage.setItem("stylerelay.speed", JSON.stringify({gatys: {rate: 200, start: 0}}));
  }
} catch {}  // about:blank has no storage
"""


@pytest.fixture(scope="module")
def mail_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayThread]:
    """A relay configured to send mail (to a port where nothing listens: none is sent)."""
    config = web_config(
        tmp_path_factory.mktemp("relay"),
        smtp_host="127.0.0.1",
        smtp_port=9,
        smtp_from="relay@example.org",
        public_url="http://127.0.0.1",
    )
    server = RelayThread(config).start()
    server.add_node(epoch_seconds=0.04)
    yield server
    server.stop()


def _job_email(relay: RelayThread, job_id: str) -> str | None:
    return relay.call(lambda: relay.app[SERVICE].get(job_id).email)


def test_tab_title_notification_and_email(
    mail_relay: RelayThread, context: BrowserContext, files: dict[str, Path], shots: Path
) -> None:
    node: FakeNode = mail_relay.nodes[0][0]
    context.add_init_script(FAKE_NOTIFICATION)
    page = open_page(context, mail_relay.url)
    expect(page).to_have_title(TITLE)

    # A fast job takes seconds: no permission prompt; the address goes with the job.
    expect(page.locator("#email-row")).to_be_visible()
    expect(page.locator("#email-note")).to_contain_text("a link to the result")
    page.locator(".tile", has_text="Candy").click()
    choose_photo(page, files["photo"])
    page.locator("#email").fill("not an address")
    page.locator("#go").click()
    expect(page.locator("#email-error")).to_be_visible()
    page.locator("#email").fill("me@example.org")
    page.locator("#go").click()
    expect(page.locator("#job-download")).to_be_visible()
    assert _job_email(mail_relay, node.offers[-1].job_id) == "me@example.org"
    assert page.evaluate("window.notes.asked") == 0
    # The ending shows on the tab, which then gets its title back.
    expect(page).to_have_title("Done · Stylerelay")
    expect(page).to_have_title(TITLE)

    # A Quality job estimated at minutes: asked once, progress on the tab, notified at the end.
    page.locator("#job-new").click()
    page.locator("#email").fill("")
    page.get_by_text("The Starry Night").click()
    # With only a slow node the page preselects Any image; this person wants Quality.
    page.get_by_text("Quality", exact=True).click()
    expect(page.locator("input[name=method][value=gatys]")).to_be_checked()
    set_range(page, "#epochs", 20)
    node.hold_at = 5
    node._release.clear()
    try:
        page.locator("#go").click()
        wait_epoch(page, 4)
        assert page.evaluate("window.notes.asked") == 1
        expect(page).to_have_title("20% · Stylerelay")
        snap(page, shots, "informed-01-running", full=False)
    finally:
        node.hold_at = None
        mail_relay.call(node.release)
    expect(page.locator("#job-download")).to_be_visible()
    expect(page).to_have_title("Done · Stylerelay")
    notes = page.evaluate("window.notes")
    assert notes["shown"] == [
        {"title": "Your painting is ready", "body": "Finished. Your painting is ready."}
    ]
    assert _job_email(mail_relay, node.offers[-1].job_id) is None
    expect(page).to_have_title(TITLE)


def _restarted(tmp: Path, port: int) -> RelayThread:
    return RelayThread(web_config(tmp, http_port=port)).start()


def test_page_heals_after_relay_restart(
    context: BrowserContext, files: dict[str, Path], shots: Path, tmp_path: Path
) -> None:
    relay = RelayThread(web_config(tmp_path)).start()
    try:
        node = relay.add_node(epoch_seconds=0.05, hold_at=3)
        page = open_page(context, relay.url)
        # No mail on this relay: no e-mail field that would go nowhere.
        expect(page.locator("#email-row")).to_be_hidden()
        page.get_by_text("The Great Wave off Kanagawa").click()
        page.locator("#photo").set_input_files(str(files["photo"]))
        set_range(page, "#epochs", 30)
        page.locator("#go").click()
        wait_epoch(page, 2)
        expect(page.locator("#history .history__item")).to_have_count(1)
        job_id = node.offers[-1].job_id
        port = int(relay.url.rsplit(":", 1)[1])
    finally:
        relay.stop()

    # The relay is down: no stale estimate, and My results says it could not ask.
    expect(page.locator("#job-conn")).to_be_visible()
    expect(page.locator("#results-failed")).to_be_visible()
    expect(page.locator("#results-empty")).to_be_hidden()
    expect(page.locator("#estimate")).to_contain_text("does not answer")
    assert "left" not in (page.locator("#job-progress-text").text_content() or "")
    snap(page, shots, "informed-02-relay-down")

    relay = _restarted(tmp_path, port)
    try:
        expect(page.locator("#job-status")).to_contain_text("No node online")
        expect(page.locator("#nodes-text")).to_have_text("No node online — jobs will wait")
        relay.add_node(epoch_seconds=0.02)
        expect(page.locator("#nodes-text")).to_have_text("1 node online")
        expect(page.locator("#job-state")).to_have_text("Done")
        expect(page.locator("#results-failed")).to_be_hidden()
        expect(page.locator("#history .history__item")).to_have_count(1)
        expect(page.locator("#history .badge")).to_have_text("Done")
        expect(page.locator("#estimate")).to_contain_text("Estimated time")
        assert page.locator("#job").get_attribute("data-job") == job_id
        snap(page, shots, "informed-03-healed")
    finally:
        relay.stop()
