"""A small, safe Markdown renderer for the subset the relay's own docs use.

Headings (with ids), paragraphs, `-`/`*` and numbered lists (continuation lines indented),
fenced code blocks, pipe tables, inline code, `**bold**` and `[links](url)`. Every piece of
text is HTML-escaped before any markup is added, and a link keeps its target only when it is
relative or http(s)/mailto, so a document can never inject script or style into the page.

    html = render(markdown_text)
"""

import html
import re

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)([-*]|\d+\.)\s+(.*)$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
_SAFE_SCHEMES = frozenset({"http", "https", "mailto"})


def _href(url: str) -> str | None:
    """The escaped `url` if it is safe to follow, else None (the link shows as text)."""
    raw = html.unescape(url)
    scheme = _SCHEME.match(raw)
    if scheme and scheme.group(1).lower() not in _SAFE_SCHEMES:
        return None
    return html.escape(raw, quote=True)


def _link(match: re.Match[str]) -> str:
    href = _href(match.group(2))
    return match.group(1) if href is None else f'<a href="{href}">{match.group(1)}</a>'


def inline(text: str) -> str:
    """Escape `text`, then mark up code spans, bold and links (none inside code)."""
    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if i % 2:
            out.append(f"<code>{html.escape(part[1:-1], quote=False)}</code>")
        else:
            escaped = html.escape(part, quote=True)
            out.append(_LINK.sub(_link, _BOLD.sub(r"<strong>\1</strong>", escaped)))
    return "".join(out)


def slug(text: str) -> str:
    """An id for a heading: its words, lower case, joined by hyphens."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words) or "section"


def _cells(row: str) -> list[str]:
    """A table row's cells; a `|` inside a code span or escaped as `\\|` stays in its cell."""
    row = row.strip()
    row = row.removeprefix("|")
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    cells, current, in_code, i = [], "", False, 0
    while i < len(row):
        ch = row[i]
        if ch == "\\" and row[i + 1 : i + 2] == "|":
            current, i = current + "|", i + 2
            continue
        if ch == "`":
            in_code = not in_code
        if ch == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += ch
        i += 1
    cells.append(current.strip())
    return cells


def _table(rows: list[str]) -> str:
    head, body = _cells(rows[0]), [_cells(r) for r in rows[2:]]
    out = ["<table><thead><tr>"]
    out += [f"<th>{inline(c)}</th>" for c in head]
    out.append("</tr></thead><tbody>")
    for cells in body:
        out.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _list(items: list[tuple[bool, str]]) -> str:
    tag = "ol" if items[0][0] else "ul"
    body = "".join(f"<li>{inline(text)}</li>" for _, text in items)
    return f"<{tag}>{body}</{tag}>"


def render(text: str) -> str:
    """`text` (Markdown) as an HTML fragment."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    seen: dict[str, int] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.lstrip().startswith("```"):
            fence = line.lstrip()[:3]
            lang = line.strip()[3:].strip()
            code = []
            i += 1
            while i < len(lines) and not lines[i].lstrip().startswith(fence):
                code.append(lines[i])
                i += 1
            i += 1
            cls = f' class="language-{html.escape(slug(lang))}"' if lang else ""
            out.append(
                f"<pre><code{cls}>{html.escape(chr(10).join(code), quote=False)}</code></pre>"
            )
        elif heading := _HEADING.match(line):
            level, title = len(heading.group(1)), heading.group(2)
            anchor = slug(title)
            seen[anchor] = seen.get(anchor, 0) + 1
            if seen[anchor] > 1:
                anchor = f"{anchor}-{seen[anchor]}"
            out.append(f'<h{level} id="{anchor}">{inline(title)}</h{level}>')
            i += 1
        elif "|" in line and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]):
            rows = [line, lines[i + 1]]
            i += 2
            while i < len(lines) and lines[i].strip() and "|" in lines[i]:
                rows.append(lines[i])
                i += 1
            out.append(_table(rows))
        elif _BULLET.match(line) and not line.startswith("    "):
            items: list[tuple[bool, str]] = []
            while i < len(lines) and lines[i].strip():
                bullet = _BULLET.match(lines[i])
                if bullet and len(bullet.group(1)) < 2:
                    items.append((bullet.group(2)[0].isdigit(), bullet.group(3)))
                elif items:  # a continuation line of the item before
                    ordered, before = items[-1]
                    items[-1] = (ordered, f"{before} {lines[i].strip()}")
                i += 1
            out.append(_list(items))
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not _starts_block(lines, i):
                para.append(lines[i].strip())
                i += 1
            if not para:  # a line no other rule took whole (cannot loop forever)
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{inline(' '.join(para))}</p>")
    return "\n".join(out)


def _starts_block(lines: list[str], i: int) -> bool:
    line = lines[i]
    if line.lstrip().startswith("```") or _HEADING.match(line) or _BULLET.match(line):
        return True
    return "|" in line and i + 1 < len(lines) and bool(_TABLE_RULE.match(lines[i + 1]))
