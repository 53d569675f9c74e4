"""The page's refusals, waiting without nodes, languages, keyboard and phone width, in
headless Chromium against a real relay. Each step leaves a screenshot.
"""

from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, expect
from web_browser import (
    new_context,
    open_page,
    set_range,
    snap,
)
from web_relay import RelayThread, web_config

pytest_plugins = ["web_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_refusals_are_shown_next_to_their_cause(
    relay: RelayThread, context: BrowserContext, files: dict[str, Path], shots: Path
) -> None:
    page = open_page(context, relay.url)

    # No style chosen: said next to the gallery, nothing sent.
    page.locator("#go").click()
    expect(page.locator("#style-error")).to_have_text(
        "Choose a style first: click one of the pictures, or upload your own style image."
    )
    snap(page, shots, "11-no-style", full=False)

    # A text file named .png, and a file over the byte cap: refused before upload.
    page.locator("#photo").set_input_files(str(files["fake"]))
    expect(page.locator("#photo-error")).to_have_text(
        "“notes.png” is not a PNG, JPEG, WebP or HEIC image."
    )
    page.locator("#photo").set_input_files(str(files["big"]))
    expect(page.locator("#photo-error")).to_contain_text("the limit is 1 MB")
    expect(page.locator("#photo-preview")).to_be_hidden()
    snap(page, shots, "12-bad-photo", full=False)

    # The epochs slider stops at the relay's cap.
    page.get_by_text("Udnie").click()
    expect(page.locator("#epochs")).to_have_attribute("max", "300")
    set_range(page, "#epochs", 5000)
    expect(page.locator("#epochs")).to_have_value("300")
    page.locator("#epochs").focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#epochs")).to_have_value("300")
    expect(page.locator("#epochs-hint")).to_contain_text("up to 300")

    # A request crafted past the page gets the API's refusal naming the cap.
    status, body = page.evaluate(
        """async () => {
            const canvas = document.createElement("canvas");
            canvas.width = 32; canvas.height = 24;
            const blob = await new Promise((ok) => canvas.toBlob(ok, "image/png"));
            const form = new FormData();
            form.append("content", blob, "x.png");
            form.append("style", "painting:udnie");
            form.append("epochs", "5000");
            const r = await fetch("/api/jobs", {method: "POST", body: form});
            return [r.status, await r.json()];
        }"""
    )
    assert status == 400
    assert body == {"error": "epochs 5000 is above this relay's cap of 300 (max_epochs)."}


def test_no_node_queue_and_a_full_queue(
    browser: Browser, files: dict[str, Path], shots: Path, tmp_path: Path
) -> None:
    lonely = RelayThread(web_config(tmp_path, queue_capacity=1)).start()
    context = new_context(browser)
    try:
        page = open_page(context, lonely.url)
        expect(page.locator("#nodes-text")).to_have_text("No node online — jobs will wait")
        page.get_by_text("The Scream").click()
        page.locator("#photo").set_input_files(str(files["photo"]))
        expect(page.locator("#estimate")).to_contain_text("the job will wait")
        page.locator("#go").click()
        expect(page.locator("#job-status")).to_have_text(
            "No node online, your job will wait. Position in the queue: 1."
        )
        expect(page.locator("#job-state")).to_have_text("Queued")
        snap(page, shots, "13-waiting")

        # A second job does not fit in the queue: the relay's words, by the button.
        page.locator("#go").click()
        expect(page.locator("#submit-error")).to_have_text(
            "The relay refused the request: The queue is full (1 jobs waiting); try again in 30 s."
        )
        snap(page, shots, "14-queue-full", full=False)

        page.locator("#job-cancel").click()
        expect(page.locator("#job-status")).to_have_text("The job was cancelled.")
        expect(page.locator("#job-state")).to_have_text("Cancelled")
    finally:
        context.close()
        lonely.stop()


def test_chinese_is_remembered_and_the_page_fits_a_phone(
    relay: RelayThread, browser: Browser, shots: Path
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    try:
        page = open_page(context, relay.url)
        expect(page.locator("#style-h")).to_have_text("Choose a style")
        page.locator("#lang").select_option("zh-CN")
        expect(page.locator("#style-h")).to_have_text("选择风格")
        page.reload()
        page.wait_for_selector('body[data-ready="1"]')
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        expect(page.locator("#style-h")).to_have_text("选择风格")
        expect(page.locator("#go")).to_have_text("开始绘制")
        expect(page.locator("#nodes-text")).to_have_text("1 个节点在线")
        expect(page.locator("#photo-limits")).to_contain_text("1 MB")
        page.locator("#go").click()
        expect(page.locator("#style-error")).to_contain_text("请先选择风格")
        # Nothing sticks out sideways at phone width.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        snap(page, shots, "15-phone-zh")
    finally:
        context.close()


def test_keyboard_and_screen_reader_basics(relay: RelayThread, context: BrowserContext) -> None:
    page = open_page(context, relay.url)
    # Tab from the top reaches the style choices; arrows move between them, like any radios.
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.name") == "style":
            break
    assert page.evaluate("document.activeElement.value") == "painting:starry_night"
    page.keyboard.press("Space")
    expect(page.locator("input[value='painting:starry_night']")).to_be_checked()
    page.keyboard.press("ArrowRight")
    expect(page.locator("input[value='painting:the_scream']")).to_be_checked()
    expect(page.locator(".tile.is-selected")).to_have_count(1)
    expect(page.locator(".tile.is-selected")).to_contain_text("The Scream")

    # Every control has a name, every image an alt, and progress is announced.
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll("input, select, button, textarea")]
            .filter((e) => e.type !== "hidden")
            .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
                && !e.getAttribute("aria-labelledby") && !e.textContent.trim())
            .map((e) => e.outerHTML)"""
    )
    assert unnamed == []
    assert page.locator("img:not([alt])").count() == 0
    expect(page.locator("#job-status")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#job-bar")).to_have_attribute("aria-labelledby", "job-progress-text")


def test_dropped_photo_and_expired_jobs_leave_the_list(
    relay: RelayThread, context: BrowserContext, shots: Path
) -> None:
    page = open_page(context, relay.url)
    # A photo dragged from the desktop onto the drop zone.
    page.evaluate(
        """async () => {
            const canvas = document.createElement("canvas");
            canvas.width = 200; canvas.height = 100;
            const ctx = canvas.getContext("2d");
            ctx.fillStyle = "#c33"; ctx.fillRect(0, 0, 200, 100);
            const blob = await new Promise((ok) => canvas.toBlob(ok, "image/png"));
            const drag = new DataTransfer();
            drag.items.add(new File([blob], "dropped.png", {type: "image/png"}));
            const zone = document.getElementById("drop");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, {dataTransfer: drag, bubbles: true,
                                                        cancelable: true}));
            }
        }"""
    )
    expect(page.locator("#photo-name")).to_contain_text("dropped.png — 200 × 100 px")
    expect(page.locator("#photo-preview")).to_have_attribute("alt", "Your photo: dropped.png")
    snap(page, shots, "16-dropped", full=False)

    # A job the relay no longer knows (expired) is dropped from this browser's list.
    page.evaluate("localStorage.setItem('stylerelay.jobs', JSON.stringify(['gone-job-id']))")
    page.reload()
    page.wait_for_selector('body[data-ready="1"]')
    expect(page.locator("#results-empty")).to_be_visible()
    page.wait_for_function("localStorage.getItem('stylerelay.jobs') === '[]'")

    # So does a link to such a job.
    page.goto(f"{relay.url}/#job=gone-job-id")
    expect(page.locator("#job-error")).to_have_text(
        "This job is not on the relay any more: its id is wrong, or it expired."
    )
