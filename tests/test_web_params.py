"""The page's job settings follow the shared table of job parameters: each control shows
only for the methods its parameter applies to, and the Gatys settings `init`, `style_scale`
and `pooling` are offered in the advanced panel, in both languages. In headless Chromium
against a real relay with a fake node; screenshots go to `$STYLERELAY_SHOTS` when set."""

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect
from relay_harness import FakeNode
from web_browser import choose_photo, open_page, set_range, snap
from web_relay import RelayThread

from protocol.params import TABLE

pytest_plugins = ["web_fixtures"]
WEB = Path(__file__).resolve().parent.parent / "web"


class _Controls(HTMLParser):
    """The page's `data-param` elements: parameter name -> its `data-methods`."""

    def __init__(self) -> None:
        super().__init__()
        self.methods: dict[str, tuple[str, ...]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        name = found.get("data-param")
        if name:
            assert name not in self.methods, f"two controls for {name}"
            self.methods[name] = tuple((found.get("data-methods") or "").split())


def test_every_public_parameter_has_a_control_marked_with_its_methods() -> None:
    controls = _Controls()
    controls.feed((WEB / "index.html").read_text(encoding="utf-8"))
    table = {p.name: p.methods for p in TABLE if p.public}
    assert controls.methods == table


def test_both_languages_name_the_new_settings() -> None:
    keys = ["adv.init", "adv.init.noise", "adv.scale", "adv.pooling", "adv.pooling.avg"]
    for lang in ("en", "zh-CN"):
        text = (WEB / "js" / "lang" / f"{lang}.js").read_text(encoding="utf-8")
        found = set(re.findall(r'^\s*"([\w.]+)":', text, re.M))
        assert set(keys) <= found, lang


@pytest.mark.browser
@pytest.mark.slow
def test_controls_follow_the_method_and_gatys_settings_reach_the_node(
    relay: RelayThread, node: FakeNode, context: BrowserContext, files: dict[str, Path], shots: Path
) -> None:
    page = open_page(context, relay.url)
    page.get_by_text("The Starry Night").click()
    expect(page.locator("input[name=method][value=gatys]")).to_be_checked()
    choose_photo(page, files["photo"])
    # Strength (style weight and warm-up for Gatys), epochs and the advanced panel show.
    expect(page.locator("#strength-field")).to_be_visible()
    expect(page.locator("#epochs-field")).to_be_visible()
    expect(page.locator("#advanced")).to_be_visible()
    page.locator("#advanced summary").click()
    page.locator("#init").select_option("noise")
    page.locator("#pooling").select_option("avg")
    page.locator("#style-scale").fill("9")
    set_range(page, "#epochs", 4)
    set_range(page, "#strength", 40)
    page.locator("#go").click()
    expect(page.locator("#advanced-error")).to_have_text(
        "“Style scale” must be a number from 0.05 to 4."
    )
    expect(page.locator("#style-scale")).to_be_focused()
    page.locator("#style-scale").fill("0.5")
    snap(page, shots, "params-01-gatys-advanced", full=False)
    page.locator("#go").click()
    expect(page.locator("#job-download")).to_be_visible(timeout=15000)
    params = node.offers[-1].params
    assert (params["init"], params["pooling"], params["style_scale"]) == ("noise", "avg", 0.5)
    assert params["strength"] == 0.4  # a lighter look

    # A fast style: strength shows, the Gatys-only controls hide and are not sent.
    page.locator("#job-new").click()
    page.locator(".tile", has_text="Candy").click()
    expect(page.locator("input[name=method][value=fast]")).to_be_checked()
    expect(page.locator("#strength-field")).to_be_visible()
    expect(page.locator("#epochs-field")).to_be_hidden()
    expect(page.locator("#advanced")).to_be_hidden()
    set_range(page, "#strength", 60)
    page.locator("#methods").scroll_into_view_if_needed()
    snap(page, shots, "params-02-fast", full=False)
    page.locator("#go").click()
    expect(page.locator("#job-download")).to_be_visible(timeout=15000)
    params = node.offers[-1].params
    assert params["strength"] == 0.6
    assert not {"init", "pooling", "style_scale", "epochs"} & set(params)


@pytest.mark.browser
@pytest.mark.slow
def test_the_new_settings_in_chinese(
    relay: RelayThread, context: BrowserContext, shots: Path
) -> None:
    page = open_page(context, relay.url)
    page.get_by_text("The Starry Night").click()
    page.locator("#lang").select_option("zh-CN")
    page.locator("#advanced summary").click()
    expect(page.locator("[data-param=init] span")).to_have_text("起始画面")
    expect(page.locator("#pooling option[value=avg]")).to_have_text("平均值（更平滑）")
    expect(page.locator("[data-param=style_scale] span")).to_have_text("风格缩放")
    snap(page, shots, "params-03-zh", full=False)
