"""Shared bits of the daemon tests: tiny test pictures and a fake relay on port 0.

The fake relay is a real asyncio TCP server speaking the real protocol through
`protocol.Connection(Role.RELAY)`; the daemon under test dials it like any relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from gpu_node.images import encode_png, open_image, resize_long_side
from protocol import (
    Connection,
    Hello,
    Message,
    Ping,
    Pong,
    Reject,
    RejectReason,
    Role,
    Welcome,
)

DATA = Path(__file__).parent / "data" / "fast"


def picture(name: str = "chelsea.png", long_side: int = 48) -> Image.Image:
    """A bundled photo scaled to `long_side`."""
    return resize_long_side(open_image(DATA / name), long_side)


def png(name: str = "chelsea.png", long_side: int = 48) -> bytes:
    """A bundled photo scaled to `long_side`, as PNG bytes."""
    return encode_png(picture(name, long_side))


def decode(data: bytes) -> Image.Image:
    """Decode PNG or JPEG bytes."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@dataclass
class RelaySide:
    """The fake relay's end of one node connection."""

    conn: Connection
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    hello: Hello | None = None
    inbox: asyncio.Queue[Message | None] = field(default_factory=asyncio.Queue)

    def send(self, message: Message) -> None:
        """Write one message to the node."""
        self.writer.write(self.conn.send(message))

    async def next(self, timeout: float = 30.0) -> Message | None:
        """The node's next message (None: the node closed the connection)."""
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def expect(self, kind: type, timeout: float = 30.0) -> Message:
        """Skip messages until one of `kind`; fail on end of stream."""
        while True:
            message = await self.next(timeout)
            assert message is not None, f"the node hung up while we waited for {kind.__name__}"
            if isinstance(message, kind):
                return message

    async def until_closed(self, timeout: float = 30.0) -> list[Message]:
        """Every message until the node hangs up."""
        seen: list[Message] = []
        while (message := await self.next(timeout)) is not None:
            seen.append(message)
        return seen

    def close(self) -> None:
        """Drop the connection."""
        self.writer.close()


Handshake = Callable[[Hello, Connection], Message]
"""Decides the fake relay's answer to a Hello: a Welcome or a Reject."""


def welcome(hello: Hello, conn: Connection) -> Message:
    """Accept every node, with a short heartbeat."""
    del hello
    return Welcome(1, "session-1", 5.0, conn.advertised_limits(1000, 50_000_000))


def reject_token(hello: Hello, conn: Connection) -> Message:
    """Refuse every node for its token."""
    del hello, conn
    return Reject(RejectReason.BAD_TOKEN, "unknown or revoked token")


class FakeRelay:
    """A TCP server on 127.0.0.1, port 0, that answers Hellos and queues every connection."""

    def __init__(self, handshake: Handshake = welcome, *, answer_pings: bool = True) -> None:
        self.handshake = handshake
        self.answer_pings = answer_pings
        self.sessions: asyncio.Queue[RelaySide] = asyncio.Queue()
        self.hellos: list[Hello] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def next_session(self, timeout: float = 30.0) -> RelaySide:
        """The next node connection that got past its Hello."""
        return await asyncio.wait_for(self.sessions.get(), timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        side = RelaySide(Connection(Role.RELAY), reader, writer)
        try:
            while data := await reader.read(65536):
                for message in side.conn.receive_data(data):
                    if isinstance(message, Hello):
                        self.hellos.append(message)
                        side.hello = message
                        answer = self.handshake(message, side.conn)
                        side.send(answer)
                        if isinstance(answer, Reject):
                            await writer.drain()
                            writer.close()
                            return
                        await self.sessions.put(side)
                    elif isinstance(message, Ping) and self.answer_pings:
                        side.send(Pong(message.nonce))  # as a live relay does
                    else:
                        await side.inbox.put(message)
            side.conn.receive_data(b"")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            await side.inbox.put(None)
            self._tasks.discard(task)
            writer.close()


@contextlib.asynccontextmanager
async def fake_relay(
    handshake: Handshake = welcome, *, answer_pings: bool = True
) -> AsyncIterator[FakeRelay]:
    """A started FakeRelay, stopped afterwards."""
    relay = FakeRelay(handshake, answer_pings=answer_pings)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
