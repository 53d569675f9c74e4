"""The human-readable API page at /api, and the small Markdown renderer behind it."""

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, make_config

from relay import apidoc
from relay.app import init
from relay.markdown import render

Client = TestClient[web.Request, web.Application]


def test_renderer_escapes_everything() -> None:
    out = render(
        "# Title <script>alert(1)</script>\n\n"
        'A <img src=x onerror="x()"> and `<b>code</b>` and **bold & brave**.\n\n'
        '[click](javascript:alert(1)) [ok](https://example.org/?a=1&b="2") [rel](#limits)\n\n'
        "| a | b |\n|---|---|\n| `x|y` | <i>z</i> |\n\n"
        "```\n</pre><script>x</script>\n```\n"
    )
    assert "<script" not in out and "<img" not in out and "<i>" not in out and "<b>" not in out
    assert "javascript:" not in out.replace("click", "")
    assert '<h1 id="title-script-alert-1-script">Title &lt;script&gt;' in out
    assert "<code>&lt;b&gt;code&lt;/b&gt;</code>" in out
    assert "<strong>bold &amp; brave</strong>" in out
    assert '<a href="https://example.org/?a=1&amp;b=&quot;2&quot;">ok</a>' in out
    assert '<a href="#limits">rel</a>' in out
    assert "<td><code>x|y</code></td><td>&lt;i&gt;z&lt;/i&gt;</td>" in out
    assert "<pre><code>&lt;/pre&gt;&lt;script&gt;x&lt;/script&gt;</code></pre>" in out


def test_lists_and_paragraphs() -> None:
    out = render("Para one\ncontinues.\n\n- first\n  more\n- second\n\n1. one\n2. two\n")
    assert "<p>Para one continues.</p>" in out
    assert "<ul><li>first more</li><li>second</li></ul>" in out
    assert "<ol><li>one</li><li>two</li></ol>" in out


def test_the_docs_are_found_and_shipped() -> None:
    source = apidoc.find_source()
    assert source is not None
    assert source.read_text(encoding="utf-8").startswith("# Stylerelay HTTP API")
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    assert '"share/stylerelay" = ["docs/api.md"]' in pyproject.read_text()


async def test_api_page_is_html_under_the_strict_policy(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    clock = FakeClock()
    client: Client = await aiohttp_client(init(make_config(tmp_path), clock, clock))
    resp = await client.get("/api")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert "style-src 'self'" in resp.headers["Content-Security-Policy"]
    text = await resp.text()
    assert "<title>Stylerelay HTTP API — Stylerelay</title>" in text
    assert '<h2 id="limits">Limits</h2>' in text
    docs = apidoc.find_source()
    assert docs is not None
    tables = docs.read_text(encoding="utf-8").count("\n| --- |")
    assert tables >= 4 and text.count("<table>") == tables  # every table of the docs
    assert 'href="/css/api.css"' in text and ' style="' not in text and "<style" not in text
    css = await client.get("/css/api.css")
    assert css.status == 200
    page = await (await client.get("/")).text()
    assert 'href="/api"' in page
