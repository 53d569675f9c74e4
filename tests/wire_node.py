"""A fake GPU node that dials a real relay's node port and speaks the real protocol.

It does only what a test tells it to: say Hello, read the relay's messages, answer them.
"""

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TypeVar

from protocol import (
    PROTOCOL_VERSION,
    Capabilities,
    Connection,
    Hello,
    Message,
    Ping,
    Pong,
    Role,
    StyleInfo,
)

M = TypeVar("M", bound=Message)


def capabilities(**changes: object) -> Capabilities:
    """A node that serves every method and one fast style, with roomy caps."""
    fields: dict[str, object] = {
        "device_name": "Fake GPU",
        "device_memory": 8 << 30,
        "methods": ("gatys", "fast", "arbitrary"),
        "styles": (StyleInfo("builtin:candy", "Candy", "fast", b"\xff\xd8\xff\xe0fake"),),
        "max_epochs": 1000,
        "max_pixels": 4_000_000,
        "slots": 1,
    }
    fields.update(changes)
    return Capabilities(**fields)  # type: ignore[arg-type]


@dataclass
class WireNode:
    """One TCP connection to the relay's node port, with a protocol Connection on top."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: Connection = field(default_factory=lambda: Connection(Role.NODE))
    inbox: list[Message] = field(default_factory=list)

    @classmethod
    async def dial(cls, port: int) -> "WireNode":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def hello(
        self,
        token: str,
        name: str = "gpu-1",
        *,
        versions: tuple[int, ...] = (PROTOCOL_VERSION,),
        **caps: object,
    ) -> None:
        """Say Hello offering `versions` (an older node offers (1,))."""
        await self.send(Hello(versions, name, token, "test", capabilities(**caps)))

    async def send(self, message: Message) -> None:
        self.writer.write(self.conn.send(message))
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def next(self, timeout: float = 5.0) -> Message:
        """The relay's next message (waiting at most `timeout` seconds)."""
        async with asyncio.timeout(timeout):
            while not self.inbox:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("the relay closed the connection")
                self.inbox.extend(self.conn.receive_data(data))
        return self.inbox.pop(0)

    async def expect(self, kind: type[M], timeout: float = 5.0, skip_pings: bool = True) -> M:
        """The next message that is not a Ping; it must be of `kind`."""
        while True:
            message = await self.next(timeout)
            if skip_pings and isinstance(message, Ping) and kind is not Ping:
                await self.send(Pong(message.nonce))
                continue
            assert isinstance(message, kind), message
            return message

    async def closed_by_relay(self, timeout: float = 5.0) -> bool:
        """True once the relay has closed the connection (reading whatever comes first)."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionError:
                    return True
                if not data:
                    return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
