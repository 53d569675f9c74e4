"""The page on a phone and the page's newer pictures, in headless Chromium against a real relay
with a fake node: Cancel stays in reach while a job runs, a HEIC photo goes through, the
before/after slider answers the keyboard, and the API page renders. Screenshots are left in
the shots folder (`STYLERELAY_SHOTS` to keep them)."""

import io
from pathlib import Path

import pillow_heif
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, expect
from relay_harness import FakeNode
from web_browser import choose_photo, open_page, photo_png, set_range, snap
from web_relay import RelayThread

pytest_plugins = ["web_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def heic_file(root: Path, size: tuple[int, int] = (400, 300)) -> Path:
    """A real HEIC photo (what an iPhone sends), encoded by libheif."""
    with Image.open(io.BytesIO(photo_png(size))) as img:
        heif = pillow_heif.from_pillow(img.convert("RGB"))
    path = root / "IMG_0001.HEIC"
    heif.save(str(path), quality=80)
    return path


def test_one_pass_size_and_before_after_by_keyboard(
    relay: RelayThread,
    node: FakeNode,
    context: BrowserContext,
    files: dict[str, Path],
    shots: Path,
) -> None:
    page = open_page(context, relay.url)
    page.get_by_text("The Starry Night").click()
    page.get_by_text("Any image", exact=True).click()
    expect(page.locator("input[name=method][value=arbitrary]")).to_be_checked()
    choose_photo(page, files["photo"])
    # A one-pass method keeps the photo's own size (400×300 here), not the 512 default.
    expect(page.locator("#size-out")).to_have_text("400 px (the photo's size)")
    page.locator("#go").click()
    expect(page.locator("#job-ba")).to_be_visible(timeout=10000)
    assert (node.offers[-1].width, node.offers[-1].height) == (400, 300)
    for selector in ("#job-ba-before", "#job-ba-after"):
        expect(page.locator(selector)).to_have_js_property("naturalWidth", 400)

    slider = page.locator("#job-ba-range")
    slider.focus()
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    expect(slider).to_have_value("60")
    frame = page.locator("#job-ba-frame")
    split = "e => getComputedStyle(e).getPropertyValue('--split').trim()"
    assert frame.evaluate(split) == "60%"
    clip = page.locator("#job-ba-after").evaluate("e => getComputedStyle(e).clipPath")
    assert clip == "inset(0px 0px 0px 60%)", clip
    page.keyboard.press("Home")
    assert frame.evaluate(split) == "0%"
    page.keyboard.press("End")
    assert frame.evaluate(split) == "100%"
    for _ in range(70):
        page.keyboard.press("ArrowLeft")
    page.locator("#job-ba").scroll_into_view_if_needed()
    snap(page, shots, "mobile-03-before-after", full=False)


def test_api_page_renders_under_the_policy(
    relay: RelayThread, context: BrowserContext, shots: Path
) -> None:
    page = open_page(context, relay.url)
    manifest = page.evaluate("fetch('/manifest.webmanifest').then(r => r.json())")
    for icon in manifest["icons"]:
        status = page.evaluate(f"fetch('{icon['src']}').then(r => r.status)")
        assert status == 200, icon
    assert {i["sizes"] for i in manifest["icons"]} >= {"192x192", "512x512"}

    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security" in m.text else None)
    page.get_by_role("link", name="API").click()
    page.wait_for_url("**/api")
    expect(page.locator("h1")).to_have_text("Stylerelay HTTP API")
    assert page.locator("h2").count() >= 10
    assert page.locator("table").count() >= 4
    expect(page.locator("th", has_text="limit").first).to_be_visible()
    # The stylesheet applied: code has its own background.
    code_bg = page.locator("p code").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert code_bg not in ("rgba(0, 0, 0, 0)", "transparent"), code_bg
    assert blocked == []
    snap(page, shots, "mobile-04-api-page", full=False)


# Last: the cancelled job keeps the fake node's slot until its lease ends.
def test_phone_heic_photo_and_cancel_in_reach(
    relay: RelayThread, node: FakeNode, browser: Browser, tmp_path: Path, shots: Path
) -> None:
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, locale="en-US"
    )
    try:
        page = open_page(phone, relay.url)
        camera = page.locator("#photo-camera")
        assert camera.get_attribute("capture") == "environment"
        expect(page.locator("label[for=photo-camera]")).to_be_visible()
        expect(page.locator("label[for=photo]")).to_be_visible()
        assert ".heic" in (page.locator("#photo").get_attribute("accept") or "")
        page.get_by_text("The Starry Night").click()
        page.locator("#photo").set_input_files(str(heic_file(tmp_path)))
        expect(page.locator("#photo-name")).to_contain_text("IMG_0001.HEIC")
        expect(page.locator("#photo-error")).to_be_hidden()
        snap(page, shots, "mobile-01-heic-chosen", full=False)

        set_range(page, "#epochs", 10)  # few epochs left to run out once the node is released
        node.hold_at = 2  # the job keeps running until released
        page.locator("#go").click()
        expect(page.locator("#job-state")).to_have_text("Painting", timeout=10000)
        dock_cancel = page.locator("#job-dock-cancel")
        expect(dock_cancel).to_be_in_viewport()
        # Wherever the person scrolls, Cancel stays on screen.
        for where in ("0", "document.body.scrollHeight"):
            page.evaluate(f"window.scrollTo(0, {where})")
            expect(dock_cancel).to_be_in_viewport()
        snap(page, shots, "mobile-02-running-scrolled", full=False)
        offer = node.offers[-1]
        # Decoded from the 400×300 HEIC by the relay, at this relay's default Quality size.
        assert (offer.width, offer.height) == (256, 192)
        expect(page.locator("#job-content")).to_have_js_property("naturalWidth", 256)

        dock_cancel.click()
        expect(page.locator("#job-state")).to_have_text("Cancelled")
        expect(page.locator("#job-dock")).to_be_hidden()
    finally:
        node.hold_at = None
        relay.call(node.release)  # in the relay's loop: asyncio events are not thread-safe
        phone.close()
