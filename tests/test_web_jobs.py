"""Jobs through the page in headless Chromium, against a real relay with a fake node: from
the gallery to a downloaded PNG, fast styles, blends and one's own style image, a dropped
connection and a reload mid-job, and cancelling. Each step leaves a screenshot.
"""

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import BrowserContext, expect
from relay_harness import FakeNode
from web_browser import (
    PHOTO_SIZE,
    PNG_MAGIC,
    choose_photo,
    open_page,
    record_progress,
    result_png,
    set_range,
    shown_epoch,
    snap,
    wait_epoch,
)
from web_relay import RelayThread

from relay.api import SERVICE

pytest_plugins = ["web_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_quality_job_from_gallery_to_downloaded_png(
    relay: RelayThread, node: FakeNode, context: BrowserContext, files: dict[str, Path], shots: Path
) -> None:
    node.epoch_seconds = 0.06
    page = open_page(context, relay.url)
    expect(page.locator("#gallery .tile[data-kind=painting]")).to_have_count(5)
    expect(page.locator("#gallery .tile[data-kind=fast]")).to_have_count(2)
    expect(page.locator("#nodes-text")).to_have_text("1 node online")
    expect(page.locator("#photo-limits")).to_have_text(
        "PNG, JPEG, WebP or HEIC, up to 1 MB and 4 megapixels."
    )
    snap(page, shots, "01-loaded")

    page.get_by_text("The Starry Night").click()
    expect(page.locator("input[value='painting:starry_night']")).to_be_checked()
    expect(page.locator("input[name=method][value=gatys]")).to_be_checked()
    expect(page.locator("input[name=method][value=fast]")).to_be_disabled()
    choose_photo(page, files["photo"])
    expect(page.locator("#photo-preview")).to_be_visible()
    expect(page.locator("#photo-name")).to_contain_text("400 × 300")
    set_range(page, "#epochs", 40)
    expect(page.locator("#epochs-out")).to_have_text("40")
    expect(page.locator("#estimate")).to_contain_text("Estimated time")
    snap(page, shots, "02-ready", full=False)

    record_progress(page)
    page.locator("#go").click()
    expect(page.locator("#job")).to_be_visible()
    wait_epoch(page, 15)
    snap(page, shots, "03-running", full=False)
    expect(page.locator("#job-download")).to_be_visible(timeout=20000)
    snap(page, shots, "04-done")

    # The bar moved forward in several steps and the preview changed while it ran.
    seen = page.evaluate("window.seen")
    bars, previews = seen["bars"], seen["previews"]
    assert len(bars) >= 5, bars
    assert bars == sorted(bars), bars
    assert len(set(previews)) >= 3, previews
    expect(page.locator("#job-bar")).to_have_js_property("value", 100)
    expect(page.locator("#job-progress-text")).to_have_text("Epoch 40 of 40 · 100%")
    expect(page.locator("#job-state")).to_have_text("Done")
    offer = node.offers[-1]
    assert (offer.method, offer.epochs, offer.width, offer.height) == ("gatys", 40, 256, 192)

    # Content, style and result side by side, each a loaded picture with alt text.
    for selector in ("#job-content", "#job-styles img", "#job-result"):
        locator = page.locator(selector)
        expect(locator).to_be_visible()
        assert locator.evaluate("e => e.complete && e.naturalWidth") > 0
        assert locator.get_attribute("alt")

    data, name = result_png(page)
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.size == (256, 256 * PHOTO_SIZE[1] // PHOTO_SIZE[0])
    assert name == "hills-stylized.png"

    # The results list has it, and the job's link reopens it in another tab.
    expect(page.locator("#history .history__item")).to_have_count(1)
    expect(page.locator("#history .badge")).to_have_text("Done")
    expect(page.locator("#history .history__style")).to_have_attribute(
        "src", f"/api/jobs/{node.offers[-1].job_id}/style/0"
    )
    link = page.locator("#job-link").input_value()
    job_id = offer.job_id
    assert link == f"{relay.url}/#job={job_id}"
    again = context.new_page()
    again.goto(link)
    expect(again.locator("#job-state")).to_have_text("Done")
    expect(again.locator("#job-download")).to_have_attribute("href", f"/api/jobs/{job_id}/result")
    snap(again, shots, "05-reopened", full=False)


def test_fast_style_job(
    relay: RelayThread, node: FakeNode, context: BrowserContext, files: dict[str, Path], shots: Path
) -> None:
    page = open_page(context, relay.url)
    page.locator(".tile", has_text="Candy").click()
    expect(page.locator("input[name=method][value=fast]")).to_be_checked()
    expect(page.locator("#epochs")).to_be_disabled()
    choose_photo(page, files["photo"])
    set_range(page, "#size", 320)
    page.locator("#keep-colors").check()
    page.locator("#go").click()
    expect(page.locator("#job-download")).to_be_visible(timeout=15000)
    offer = node.offers[-1]
    assert offer.method == "fast"
    assert offer.fast_styles == (("candy", 1.0),)
    assert offer.params["keep_colors"] is True
    data, _name = result_png(page)
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (320, 240)
    # A fast style has no style image of its own: its thumbnail stands in, named for what
    # it is (the style painted on a sample photo), not passed off as the style.
    expect(page.locator("#job-styles img")).to_have_attribute(
        "src", "/api/styles/fast:candy/thumbnail"
    )
    expect(page.locator("#job-styles .compare__fastname")).to_contain_text("sample photo")
    snap(page, shots, "06-fast-done", full=False)


def test_blend_of_paintings_and_own_style_image(
    relay: RelayThread, node: FakeNode, context: BrowserContext, files: dict[str, Path], shots: Path
) -> None:
    page = open_page(context, relay.url)
    page.locator("#blend").check()
    page.get_by_text("The Scream").click()
    page.get_by_text("Udnie").click()
    expect(page.locator("#blend-list li")).to_have_count(2)
    set_range(page, "#blend-list li:first-child input", 75)
    # Sliders show each style's share of the blend, as the figures beside them do.
    expect(page.locator("#blend-list output")).to_have_text(["75%", "25%"])
    expect(page.locator("#blend-list li:last-child input")).to_have_value("25")
    page.locator("#photo").set_input_files(str(files["photo"]))
    set_range(page, "#epochs", 6)
    snap(page, shots, "07-blend", full=False)

    # The advanced panel: a bad number is refused in the page, good ones reach the node.
    page.locator("#advanced summary").click()
    page.locator("#content-weight").fill("-1")
    page.locator("#go").click()
    expect(page.locator("#advanced-error")).to_have_text(
        "“Content weight” must be a number of zero or more."
    )
    expect(page.locator("#content-weight")).to_be_focused()
    page.locator("#content-weight").fill("0.5")
    page.locator("#optimizer").select_option("adam")
    page.locator("#go").click()
    expect(page.locator("#job-download")).to_be_visible(timeout=15000)
    offer = node.offers[-1]
    weights = [round(w, 2) for _png, w in offer.style_images]
    assert weights == [0.75, 0.25]
    assert offer.params["content_weight"] == 0.5
    assert offer.params["optimizer"] == "adam"
    expect(page.locator("#job-styles img")).to_have_count(2)

    # One's own style image: uploaded in the gallery, and the "any image" method.
    page.locator("#job-new").click()
    page.locator("#blend").uncheck()
    page.locator("#style-upload").set_input_files(str(files["style"]))
    expect(page.locator(".tile.is-selected")).to_contain_text("Your style 1")
    page.locator("input[name=method][value=arbitrary]").check(force=True)
    page.locator("#go").click()
    expect(page.locator("#job-download")).to_be_visible(timeout=15000)
    offer = node.offers[-1]
    assert offer.method == "arbitrary"
    assert len(offer.style_images) == 1
    snap(page, shots, "08-own-style-done", full=False)


def test_connection_drop_and_reload_resume_the_job(
    relay: RelayThread, node: FakeNode, context: BrowserContext, files: dict[str, Path], shots: Path
) -> None:
    node.epoch_seconds = 0.06
    page = open_page(context, relay.url)
    page.get_by_text("The Great Wave off Kanagawa").click()
    page.locator("#photo").set_input_files(str(files["photo"]))
    set_range(page, "#epochs", 90)
    page.locator("#go").click()
    wait_epoch(page, 5)

    context.set_offline(True)
    assert relay.drop_sockets() >= 1
    expect(page.locator("#job-conn")).to_be_visible()
    expect(page.locator("#job-conn")).to_have_text(re.compile("offline|Reconnecting"))
    frozen = shown_epoch(page)
    page.wait_for_timeout(700)
    snap(page, shots, "09-offline", full=False)
    assert shown_epoch(page) == frozen, "events arrived while offline"
    assert node.epochs_reported[-1] > frozen  # the node kept painting meanwhile

    context.set_offline(False)
    expect(page.locator("#job-conn")).to_have_text("Connected again.")
    caught_up = wait_epoch(page, frozen + 5)
    assert caught_up > frozen
    snap(page, shots, "10-reconnected", full=False)

    # Reloading mid-job comes back to the same job, still moving.
    page.reload()
    page.wait_for_selector('body[data-ready="1"]')
    expect(page.locator("#job")).to_be_visible()
    wait_epoch(page, caught_up + 3)
    expect(page.locator("#job-download")).to_be_visible(timeout=20000)
    expect(page.locator("#job-progress-text")).to_have_text("Epoch 90 of 90 · 100%")


def test_cancel_a_running_job(
    relay: RelayThread, node: FakeNode, context: BrowserContext, files: dict[str, Path]
) -> None:
    page = open_page(context, relay.url)
    page.get_by_text("Woman with a Hat").click()
    page.locator("#photo").set_input_files(str(files["photo"]))
    set_range(page, "#epochs", 250)
    page.locator("#go").click()
    wait_epoch(page, 3)
    page.locator("#job-cancel").click()
    expect(page.locator("#job-status")).to_have_text("The job was cancelled.")
    expect(page.locator("#job-cancel")).to_be_hidden()
    expect(page.locator("#job-download")).to_be_hidden()
    offer = node.offers[-1]
    # The node was told: it stops well before the end.
    page.wait_for_timeout(500)
    reported = len(node.epochs_reported)
    page.wait_for_timeout(500)
    assert len(node.epochs_reported) == reported
    assert relay.call(lambda: str(relay.app[SERVICE].get(offer.job_id).state)) == "cancelled"
