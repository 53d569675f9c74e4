"""Operators' views: `GET /metrics` (Prometheus) and `GET /status` (a read-only HTML page,
with the gallery items visitors reported).

Neither shows a token, an e-mail address, an image or a whole job id (a job id is the key
to its result): a running job appears as the same six-character tag `/api/nodes` uses.
"""

import base64
import hashlib
import html
import time
from typing import Any

from aiohttp import web

from relay.api import SERVICE
from relay.metrics import CONTENT_TYPE
from relay.views import node_list

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-top: 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: .35rem .8rem; text-align: left; }
th { background: #f4f4f4; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
"""
# The page's one inline style, allowed by its hash: the relay's policy for pages (see
# `relay.crosssite`) refuses inline styles otherwise.
_POLICY = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
    + "'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "none waiting"
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(stamp))


def _state(node: dict[str, Any]) -> str:
    if node.get("paused"):
        return f"paused ({_age(node['paused_for'])} left): {node['pause_reason']}"
    if node.get("probation"):
        return f"{node['state']}, on probation (has finished no job yet)"
    return str(node["state"])


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: counters and gauges in the Prometheus text format."""
    service = request.app[SERVICE]
    text = service.metrics.render(service.gauges())
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


async def status_page(request: web.Request) -> web.Response:
    """GET /status: nodes, their state and current job tag, the queue; refreshes itself."""
    service = request.app[SERVICE]
    gauges = service.gauges()
    rows = []
    for node in node_list(service):
        cells = [
            node["name"],
            node["device"],
            _state(node),
            ", ".join(node["current_jobs"]) or "-",
            str(node["jobs_done"]),
            f"{node['busy_slots']}/{node['slots']}",
            node["last_seen"] or "-",
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    nodes = "\n".join(rows) or '<tr><td colspan="7">No node is connected.</td></tr>'
    shown, hidden = await service.showcase.counts()
    flagged = []
    for item in (await service.showcase.reported())[:100]:
        cells = [item.id, _when(item.shared), str(item.reports), item.hidden or "shown"]
        flagged.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    reports = "\n".join(flagged) or '<tr><td colspan="4">No item is reported or hidden.</td></tr>'
    now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(service.clock()))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="10">
<title>Stylerelay status</title><style>{_STYLE}</style></head>
<body>
<h1>Stylerelay status</h1>
<p>As of {now}. This page refreshes every 10 seconds.</p>
<table>
<tr><th>Queue length</th><td class="num">{gauges.queue_length}</td></tr>
<tr><th>Oldest waiting job</th><td class="num">{_age(service.oldest_queued())}</td></tr>
<tr><th>Running jobs</th><td class="num">{gauges.jobs_by_state.get("running", 0)}</td></tr>
<tr><th>Nodes connected</th><td class="num">{gauges.nodes_connected}</td></tr>
<tr><th>E-mails waiting</th><td class="num">{gauges.mail_queue}</td></tr>
</table>
<h2>Nodes</h2>
<table>
<tr><th>Name</th><th>Device</th><th>State</th><th>Current job</th><th>Jobs done</th>
<th>Busy slots</th><th>Last seen (UTC)</th></tr>
{nodes}
</table>
<h2>Public gallery</h2>
<p>{shown} item(s) shown, {hidden} hidden. Review with
<code>python -m relay gallery list|hide|restore|delete ID</code>.</p>
<table>
<tr><th>Item</th><th>Shared (UTC)</th><th>Reports</th><th>State</th></tr>
{reports}
</table>
<p>Machine-readable: <a href="/metrics">/metrics</a>, <a href="/api/nodes">/api/nodes</a>.</p>
</body></html>
"""
    return web.Response(
        text=page, content_type="text/html", headers={"Content-Security-Policy": _POLICY}
    )


def add_routes(app: web.Application) -> None:
    """Register `/metrics` and `/status`."""
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status_page)
