"""Reaching PostgreSQL through its restarts: retry a lost connection for a few seconds,
then answer 503 with Retry-After.

A transaction that fails because the connection was lost did not commit (PostgreSQL
commits only what it acknowledged), so it is run again whole; the rare commit whose reply
was lost is made harmless where it matters (a submitted job's id is inserted once; a
repeated completion is refused as stale).

    DatabaseUnavailable   503: PostgreSQL did not answer within the retry window
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from relay.errors import ApiError

T = TypeVar("T")

RETRY_FOR = 5.0
"""Seconds a call keeps retrying a lost database before it gives up with 503."""
RETRY_AFTER = 5
"""What a refused client is told to wait, in seconds."""

_LOST = (
    asyncpg.PostgresConnectionError,  # the connection broke or could not be made
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.InterfaceError,  # a pooled connection that was closed under us
    # A pooled connection the server is terminating (a restart) as a query starts on it:
    # asyncpg's protocol is caught between the two.
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
    TimeoutError,
)


class DatabaseUnavailable(ApiError):
    """503: PostgreSQL is down or unreachable; the request may be tried again later."""

    status = 503

    def __init__(self, retry_after: int = RETRY_AFTER) -> None:
        super().__init__(
            "The relay's database is not answering; no job was taken. "
            f"Try again in {retry_after} s; finished results can still be downloaded.",
            {"Retry-After": str(retry_after)},
        )


def lost(exc: BaseException) -> bool:
    """Whether `exc` means the database connection was lost (not a wrong query)."""
    return isinstance(exc, _LOST)


async def retrying(op: Callable[[], Awaitable[T]], within: float = RETRY_FOR) -> T:
    """Run `op`, again while the database is lost, for up to `within` seconds; then raise
    `DatabaseUnavailable`."""
    deadline = time.monotonic() + within
    pause = 0.05
    while True:
        try:
            return await op()
        except Exception as exc:
            if not lost(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise DatabaseUnavailable() from exc
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)
