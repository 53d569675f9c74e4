"""What pages of other sites may do with the relay: nothing that changes state.

A browser sends `Origin` with every cross-site POST and WebSocket handshake, and no
same-site check of its own stops a form or a socket: so state-changing requests (POST, PUT,
PATCH, DELETE) and WebSocket upgrades whose Origin is neither the relay's own nor in
`allowed_origins` are refused (403). Requests without an Origin (curl, scripts) are not
cross-site and pass. The relay's own origin is the scheme and host the request was sent to
(as a trusted proxy reports them in X-Forwarded-Proto/-Host), and `public_url`'s.

Every response also says: do not sniff types, send no referrer; pages add a strict Content
Security Policy (scripts and styles from the relay only, no framing).
"""

import re
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from yarl import URL

from relay import clients
from relay.api import CONFIG
from relay.config import Config
from relay.errors import Forbidden

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# A Host as it may appear in a policy: anything else is left out rather than echoed.
_PLAIN_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d+)?$|^\[[0-9A-Fa-f:.]+\](:\d+)?$")


def origin_of(text: str) -> str | None:
    """`scheme://host:port`, lower case with the port spelt out; None if not an http origin."""
    try:
        url = URL(text.strip())
    except ValueError:
        return None
    scheme = (url.scheme or "").lower()
    if scheme not in _DEFAULT_PORTS or not url.host:
        return None
    port = url.explicit_port or _DEFAULT_PORTS[scheme]
    return f"{scheme}://{url.host.lower()}:{port}"


def _forwarded(request: web.Request, name: str, config: Config) -> str | None:
    """The last value of header `name`, believed only from a trusted proxy."""
    value = request.headers.get(name)
    if not value or not clients.is_trusted(request.remote, config.trusted_proxy):
        return None
    return value.split(",")[-1].strip() or None


def request_host(request: web.Request, config: Config) -> tuple[str, str]:
    """The scheme and host the client sent this request to."""
    scheme = _forwarded(request, "X-Forwarded-Proto", config) or request.scheme
    host = _forwarded(request, "X-Forwarded-Host", config) or request.host
    return scheme.lower(), host


def own_origins(request: web.Request, config: Config) -> set[str]:
    """Origins that count as the relay itself, and those the operator allowed."""
    scheme, host = request_host(request, config)
    found = {origin_of(f"{scheme}://{host}"), *(origin_of(o) for o in config.allowed_origins)}
    if config.public_url:
        found.add(origin_of(config.public_url))
    return {o for o in found if o is not None}


def _changes_state(request: web.Request) -> bool:
    if request.method in STATE_CHANGING:
        return True
    return request.headers.get(hdrs.UPGRADE, "").strip().lower() == "websocket"


@web.middleware
async def same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (403) a state-changing request or socket sent by a page of another site."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and _changes_state(request):
        config = request.app[CONFIG]
        if origin_of(origin) not in own_origins(request, config):
            raise Forbidden(
                f"Requests from pages of {origin.strip()[:100]!r} are not accepted here; "
                "use the relay's own page, or ask its operator to allow that origin "
                "(--allowed-origins)."
            )
    return await handler(request)


def page_policy(request: web.Request, config: Config) -> str:
    """The Content-Security-Policy of a page served by the relay."""
    _, host = request_host(request, config)
    sockets = f" ws://{host} wss://{host}" if _PLAIN_HOST.match(host) else ""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; img-src 'self' blob: data:; "
        f"connect-src 'self'{sockets}; form-action 'self'"
    )


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the headers every response carries, and a page's policy."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.content_type == "text/html":
        config = request.app[CONFIG]
        response.headers.setdefault("Content-Security-Policy", page_policy(request, config))
        response.headers.setdefault("X-Frame-Options", "DENY")
