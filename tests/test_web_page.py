"""The page in headless Chromium against a real relay with a fake node, clicked like a person.

Each step leaves a screenshot (see `web_browser.shots_dir`).
"""

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from web_browser import PHOTO_SIZE, launch, make_files, new_context, open_page, shots_dir, snap
from web_relay import FakeNode, RelayThread, web_config

from relay.api import SERVICE

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Generous waits: CI shares two cores with other suites, and a loaded machine is slow, not wrong.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = launch(p)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayThread]:
    """A relay with one fake node that spends 40 ms on each epoch."""
    server = RelayThread(web_config(tmp_path_factory.mktemp("relay"))).start()
    server.add_node(epoch_seconds=0.04)
    yield server
    server.stop()


@pytest.fixture
def node(relay: RelayThread) -> Iterator[FakeNode]:
    """The relay's fake node, back at its normal speed after the test."""
    fake = relay.nodes[0][0]
    yield fake
    fake.epoch_seconds = 0.04


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_files(tmp_path_factory.mktemp("files"))


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shots_dir(tmp_path_factory.mktemp("shots"))


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile; any uncaught script error on any of its pages fails the test."""
    ctx = new_context(browser)
    errors: list[str] = []
    ctx.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(str(exc))))
    yield ctx
    ctx.close()
    assert errors == []


def set_range(page: Page, selector: str, value: int) -> None:
    """Move a slider as a person dragging it would (the browser clamps to min/max/step)."""
    page.eval_on_selector(
        selector, "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", str(value)
    )


def choose_photo(page: Page, path: Path) -> None:
    """Pick the photo through the file chooser, as a click on the button does."""
    with page.expect_file_chooser() as chooser:
        page.locator("label[for=photo]").click()
    chooser.value.set_files(str(path))


def shown_epoch(page: Page) -> int:
    text = page.locator("#job-progress-text").text_content() or ""
    match = re.search(r"Epoch (\d+) of", text)
    return int(match.group(1)) if match else 0


def wait_epoch(page: Page, at_least: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while (epoch := shown_epoch(page)) < at_least:
        status = page.locator("#job-status").text_content()
        assert time.monotonic() < deadline, f"stuck at epoch {epoch}: {status}"
        page.wait_for_timeout(50)
    return epoch


def result_png(page: Page) -> tuple[bytes, str]:
    """Click the download button; the file's bytes and its suggested name."""
    with page.expect_download() as download:
        page.locator("#job-download").click()
    return Path(download.value.path()).read_bytes(), download.value.suggested_filename


# ---- the main road -------------------------------------------------------------------------


def test_quality_job_from_gallery_to_downloaded_png(
    relay: RelayThread, node: FakeNode, context: BrowserContext, files: dict[str, Path], shots: Path
) -> None:
    node.epoch_seconds = 0.06
    page = open_page(context, relay.url)
    expect(page.locator("#gallery .tile[data-kind=painting]")).to_have_count(5)
    expect(page.locator("#gallery .tile[data-kind=fast]")).to_have_count(2)
    expect(page.locator("#nodes-text")).to_have_text("1 node online")
    expect(page.locator("#photo-limits")).to_have_text(
        "PNG, JPEG or WebP, up to 1 MB and 4 megapixels."
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

    # Record what a person would see, every 20 ms, inside the page.
    page.evaluate(
        """() => {
            window.seen = {bars: [], previews: []};
            setInterval(() => {
                const bar = document.getElementById("job-bar").value;
                const src = document.getElementById("job-result").getAttribute("src") || "";
                const {bars, previews} = window.seen;
                if (bar > 0 && bar < 100 && bars.at(-1) !== bar) bars.push(bar);
                if (src.includes("/preview") && previews.at(-1) !== src) previews.push(src);
            }, 20);
        }"""
    )
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
    # A fast style has no style image of its own: its gallery thumbnail stands in.
    expect(page.locator("#job-styles img")).to_have_attribute(
        "src", "/api/styles/fast:candy/thumbnail"
    )
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
    assert weights == [0.6, 0.4]  # 75 and 50, normalised by the relay
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


# ---- when things go wrong -------------------------------------------------------------------


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
        "“notes.png” is not a PNG, JPEG or WebP image."
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


# ---- language, keyboard, phone ---------------------------------------------------------------


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
