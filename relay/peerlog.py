"""Quiet logs of what clients do wrong at the HTTP layer.

aiohttp logs a malformed request (`BadHttpMessage`: a bad header, Content-Length beside
Transfer-Encoding...) or a client that hung up mid-request at ERROR, with a traceback, once
per request. Any anonymous client could then write a screenful of log per request it sends
and fill the operator's disk. Such records are the client's fault, not the relay's: the
filter turns the first of each kind into one WARNING line without a traceback, and counts
the rest into one line a minute.
"""

import logging
import time
from collections import Counter
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

QUIET_EVERY = 60.0
"""Seconds between two summary lines of client errors."""
_CLIENT_FAULTS = (HttpProcessingError, ConnectionError)


class ClientFaults(logging.Filter):
    """Drops aiohttp's per-request tracebacks for client errors, logging a summary instead."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._counts: Counter[str] = Counter()
        self._since: float | None = None
        self._out = logging.getLogger("relay.http")

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, _CLIENT_FAULTS):
            return True
        kind = type(exc).__name__
        now = self._clock()
        if self._since is None:
            self._since = now
            text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
            lines = [line.strip() for line in str(text).splitlines() if line.strip()]
            first = lines[0][:200] if lines else ""
            self._out.warning(
                "a client's request failed at the HTTP layer (%s%s); more of these are "
                "counted and logged once a minute",
                kind,
                f": {first}" if first else "",
            )
            return False
        self._counts[kind] += 1
        if now - self._since >= QUIET_EVERY:
            summary = ", ".join(f"{n} {k}" for k, n in sorted(self._counts.items()))
            self._out.warning(
                "client requests failed at the HTTP layer in the last %.0f s: %s",
                now - self._since,
                summary,
            )
            self._counts.clear()
            self._since = now
        return False


def install(logger: logging.Logger | None = None) -> ClientFaults:
    """Put the filter on aiohttp's server logger (once; later calls return the same one)."""
    target = logger or logging.getLogger("aiohttp.server")
    for existing in target.filters:
        if isinstance(existing, ClientFaults):
            return existing
    quiet = ClientFaults()
    target.addFilter(quiet)
    return quiet
