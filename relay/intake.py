"""Request bodies on their way in: how many bytes they hold, how long they may take, and how
many job uploads one client may have in progress.

A body's bytes are counted as the relay reads them (chunked bodies too), against a cap per
client (`body_buffer_client_mb`, 429) and one for the whole relay (`body_buffer_total_mb`,
503), and released when the request ends, however it ends. A body that will be parsed costs
more than its bytes while it is (a JSON body's text and strings sit beside it): its reader
gives the cost per byte, and that much is counted from the first byte, so the refusal comes
before the upload rather than after it. A body must arrive within
`body_timeout` seconds (408). A refused request whose body is still coming is answered and
its connection closed, so the rest is never read (aiohttp would otherwise read and discard
it for up to ten seconds). Compressed bodies are refused (415) before a byte is inflated: a
65 KB gzip body can carry 69 MB.
"""

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from aiohttp import hdrs, web

from relay import clients
from relay.config import Config
from relay.errors import Busy, RequestTimeout, TooManyRequests

MB = 1024 * 1024
# Before closing behind a refusal, what still arrives is read and dropped, up to this much:
# closing on unread bytes resets the connection, and a reset can destroy the answer.
LINGER_BYTES = 1 * MB
LINGER_SECONDS = 1.0
# Seconds a client refused for want of buffer room is told to wait: uploads finish quickly.
RETRY_AFTER = 5
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BodyBudget:
    """Bytes of unfinished request bodies held, per client and in all."""

    def __init__(self, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self.held_total = 0
        self._held: dict[str, int] = {}

    def held(self, client: str) -> int:
        """Bytes `client` holds now."""
        return self._held.get(client, 0)

    def check(self, client: str, more: int) -> None:
        """Refuse (429 or 503) when `more` bytes would not fit now; take nothing."""
        if self.held(client) + more > self.per_client:
            raise TooManyRequests(
                f"Your uploads in progress already hold {self.held(client) / MB:.1f} MB of the "
                f"{self.per_client / MB:.1f} MB one client may send at once; wait for them "
                "to finish, then try again.",
                {"Retry-After": str(RETRY_AFTER)},
            )
        if self.held_total + more > self.total:
            raise Busy(
                "The relay is receiving as many uploads as it can hold; try again shortly.",
                RETRY_AFTER,
            )

    def take(self, client: str, n: int) -> None:
        """Count `n` more bytes for `client`, or refuse them (429 or 503)."""
        self.check(client, n)
        self._held[client] = self.held(client) + n
        self.held_total += n

    def release(self, client: str, n: int) -> None:
        """Give back `n` bytes `client` held."""
        left = self.held(client) - n
        if left > 0:
            self._held[client] = left
        else:
            self._held.pop(client, None)
        self.held_total -= n


class Receipt:
    """One request's body as it arrives: its bytes counted, its deadline kept."""

    def __init__(self, request: web.Request, intake: "Intake") -> None:
        self._request = request
        self._intake = intake
        self._client: str | None = None
        self.held = 0
        self.deadline = asyncio.get_running_loop().time() + intake.config.body_timeout

    @property
    def client(self) -> str:
        """The key the bytes are counted under (see `relay.clients`)."""
        if self._client is None:
            request, trusted = self._request, self._intake.config.trusted_proxy
            forwarded = request.headers.get(hdrs.X_FORWARDED_FOR)
            self._client = clients.client_key(request.remote, forwarded, trusted)
        return self._client

    def take(self, n: int) -> None:
        """Count `n` bytes just read (or to be held for them), or refuse the request (429
        or 503)."""
        self._intake.budget.take(self.client, n)
        self.held += n

    @asynccontextmanager
    async def arriving(self, cost: float = 1.0) -> AsyncIterator[None]:
        """Read the body inside this block: it must all have arrived by the deadline (408).

        A declared length that could not fit now, at `cost` bytes held per byte, is refused
        before anything is read."""
        declared = self._request.content_length
        if declared:
            self._intake.budget.check(self.client, math.ceil(declared * cost) - self.held)
        try:
            async with asyncio.timeout_at(self.deadline):
                yield
        except TimeoutError:
            seconds = self._intake.config.body_timeout
            raise RequestTimeout(
                f"The request body did not arrive within {seconds:g} seconds; "
                "the connection is closed."
            ) from None

    async def read(self, cost: float = 1.0) -> bytearray:
        """The whole body, within the deadline, counted chunk by chunk as it arrives at `cost`
        bytes held per byte received (above 1 when what is made of the body sits beside it).

        A bytearray, so that whoever parses it can free it as soon as it is no longer needed
        (`clear()`), however many references to it are still about."""
        body = bytearray()
        async with self.arriving(cost):
            while chunk := await self._request.content.readany():
                self.take(math.ceil(len(chunk) * cost))
                body += chunk
        return body

    def release(self) -> None:
        """Give back every byte this request held (the request has ended)."""
        if self.held:
            self._intake.budget.release(self.client, self.held)
            self.held = 0


class Intake:
    """The relay's bookkeeping of request bodies and job uploads in progress."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.budget = BodyBudget(
            math.floor(config.body_buffer_client_mb * MB),
            math.floor(config.body_buffer_total_mb * MB),
        )
        self._uploads: dict[str, int] = {}

    def uploads(self, client: str) -> int:
        """Job uploads `client` has being received or decoded now."""
        return self._uploads.get(client, 0)

    @contextmanager
    def upload(self, client: str) -> Iterator[None]:
        """Hold one of the client's `uploads_per_client` upload slots, or refuse (429)."""
        limit = self.config.uploads_per_client
        if self.uploads(client) >= limit:
            raise TooManyRequests(
                f"You already have {limit} uploads being received or processed; "
                "wait for one to finish, then send the next.",
                {"Retry-After": str(RETRY_AFTER)},
            )
        self._uploads[client] = self.uploads(client) + 1
        try:
            yield
        finally:
            left = self._uploads[client] - 1
            if left:
                self._uploads[client] = left
            else:
                del self._uploads[client]


INTAKE = web.AppKey("intake", Intake)
RECEIPT = web.RequestKey("receipt", Receipt)


def receipt(request: web.Request) -> Receipt:
    """The receipt `guard` opened for this request."""
    return request[RECEIPT]


async def _answer_and_close(request: web.Request, response: web.StreamResponse) -> None:
    """Send `response`, then close the connection without reading the rest of the body
    (beyond a little, dropped: see LINGER_BYTES)."""
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    transport = request.transport
    if transport is not None and transport.can_write_eof():
        transport.write_eof()
    left = LINGER_BYTES
    try:
        async with asyncio.timeout(LINGER_SECONDS):
            while left > 0 and (chunk := await request.content.readany()):
                left -= len(chunk)
    except Exception:  # best effort: a broken or refused body just ends the wait
        pass
    request.protocol.force_close()


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: refuse compressed bodies, count and release body bytes, and
    close the connection behind a refused request whose body is still coming."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding not in ("", "identity"):
        refusal = web.json_response(
            {
                "error": f"Compressed request bodies (Content-Encoding: {encoding}) are not "
                "accepted; send the body uncompressed."
            },
            status=415,
        )
        await _answer_and_close(request, refusal)
        return refusal
    ticket = Receipt(request, request.app[INTAKE])
    request[RECEIPT] = ticket
    try:
        response = await handler(request)
    finally:
        ticket.release()
    if response.status >= 400 and not response.prepared and not request.content.is_eof():
        await _answer_and_close(request, response)
    return response
