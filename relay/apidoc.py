"""The API's documentation as a page at `GET /api`: `docs/api.md` rendered to HTML.

One source of truth: `docs/api.md`. A checkout (or a container built from one) reads it
from the repository; an installed relay from the copy the wheel puts in
`<prefix>/share/stylerelay/api.md` (`[tool.setuptools.data-files]` in pyproject.toml).
Package data cannot reach outside a package, and a symlink under `web/` does not survive
every platform, so the file is shipped rather than moved. The page is rendered once, when the
relay starts; it links only the relay's own stylesheet, so the page's strict CSP holds.
"""

import html
import sys
from pathlib import Path

from aiohttp import web

from relay.errors import NotFound
from relay.markdown import render

API_PAGE = web.AppKey("api_page", str)

SOURCES = (
    Path(__file__).resolve().parent.parent / "docs" / "api.md",
    Path(sys.prefix) / "share" / "stylerelay" / "api.md",
)

_SHELL = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="color-scheme" content="light dark">
  <title>{title} — Stylerelay</title>
  <link rel="icon" href="/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/css/api.css">
</head>
<body>
  <nav class="apidoc__nav"><a href="/">← Stylerelay</a> · <a href="/help">JSON</a></nav>
  <main class="apidoc">
{body}
  </main>
</body>
</html>
"""


def find_source(sources: tuple[Path, ...] = SOURCES) -> Path | None:
    """The first of `sources` that exists: the repository's docs, else the installed copy."""
    return next((p for p in sources if p.is_file()), None)


def page(markdown: str) -> str:
    """The whole HTML page for `markdown`, titled by its first line."""
    first = markdown.lstrip().split("\n", 1)[0].lstrip("# ").strip() or "API"
    return _SHELL.format(title=html.escape(first), body=render(markdown))


async def get_api_page(request: web.Request) -> web.Response:
    """GET /api: the API documentation, human-readable."""
    text = request.app.get(API_PAGE)
    if text is None:
        raise NotFound("The API documentation is not installed; the JSON overview is at /help.")
    return web.Response(text=text, content_type="text/html", charset="utf-8")


def add_routes(app: web.Application) -> None:
    """Render the docs once and serve them at `/api`."""
    source = find_source()
    if source is not None:
        app[API_PAGE] = page(source.read_text(encoding="utf-8"))
    app.router.add_get("/api", get_api_page)
