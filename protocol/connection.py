"""`Connection`: one end of a relay–node connection, sans-IO.

Bytes from the socket go into `receive_data`, which returns the messages they complete;
`send` turns a message into the bytes to write. There are no sockets, tasks or clocks here:
the caller does I/O and keeps time (heartbeats: docs/protocol.md, "Liveness").
"""

from __future__ import annotations

import msgpack

from .codec import decode, encode
from .errors import LocalProtocolError, RemoteProtocolError
from .frames import HEADER, Body, FrameReader, pack_frame
from .handshake import Hello, Limits, Reject, Welcome
from .limits import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_TRANSFER_SIZE,
    MAX_HELLO_SIZE,
    MAX_STYLE_IMAGES,
)
from .limits import MIN_MAX_FRAME_SIZE as _MIN_FRAME
from .messages import Bye, Checkpoint, Message, Offer, Preview, Result
from .state import ConnectionState, Role, StateMachine
from .transfers import TransferReader, TransferWriter

_LIVE = (ConnectionState.ESTABLISHED, ConnectionState.DRAINING)
# Messages that may arrive between the chunks of a transfer and do not claim transfers.
_BETWEEN_CHUNKS = ("ping", "pong", "bye")


def _no_binaries(data: bytes) -> tuple[int, str]:
    raise LocalProtocolError(
        "only Offer, Preview, Checkpoint and Result carry binaries"
    )  # never reached


class Connection:
    """One end (relay or node) of a connection: bytes in, messages out; messages in, bytes out."""

    def __init__(
        self,
        role: Role,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_transfer_size: int = DEFAULT_MAX_TRANSFER_SIZE,
    ) -> None:
        if max_frame_size < _MIN_FRAME:
            raise LocalProtocolError(f"max_frame_size must be at least {_MIN_FRAME} bytes")
        if max_transfer_size < 1:
            raise LocalProtocolError("max_transfer_size must be positive")
        self.max_frame_size = max_frame_size
        self.max_transfer_size = max_transfer_size
        # Every peer accepts 1 MiB frames, so we never send larger, whatever we accept.
        self._send_limit = min(max_frame_size, DEFAULT_MAX_FRAME_SIZE)
        self.peer_limits: Limits | None = None
        """The relay's limits from its Welcome (node side), once received."""
        self.frames_received = 0
        """Count of complete frames received, chunks included: the caller's liveness signal."""
        self._machine = StateMachine(role)
        self._packer = msgpack.Packer()
        # Until the Hello is in, the relay takes no frame larger than a Hello may be: a peer
        # that has not authenticated cannot make it buffer a full frame.
        hello_cap = min(max_frame_size, MAX_HELLO_SIZE)
        self._reader = FrameReader(hello_cap if role is Role.RELAY else max_frame_size)
        self._writer = TransferWriter(self._packer)
        # The node's messages carry at most one binary; the relay's Offer up to the content,
        # the styles and a start image.
        pending = 1 if role is Role.RELAY else 2 + MAX_STYLE_IMAGES
        self._transfers = TransferReader(max_transfer_size, pending)
        self._out: list[bytes | memoryview] = []
        self._error: RemoteProtocolError | None = None
        self._eof = False
        self._closed_by_us = False

    @property
    def role(self) -> Role:
        """Which end this is."""
        return self._machine.role

    @property
    def state(self) -> ConnectionState:
        """Where the connection stands."""
        return self._machine.state

    @property
    def version(self) -> int | None:
        """The protocol version chosen in Welcome, once sent or received."""
        return self._machine.version

    @property
    def open_leases(self) -> int:
        """Leases offered or accepted and not yet ended (a draining node leaves at 0)."""
        return self._machine.open_leases

    def advertised_limits(self, max_epochs: int, max_pixels: int) -> Limits:
        """Limits for the relay's Welcome, with this connection's receive limits filled in."""
        return Limits(max_epochs, max_pixels, self.max_frame_size, self.max_transfer_size)

    def send(self, message: Message) -> bytes:
        """The bytes that send `message` (chunk frames first); LocalProtocolError if illegal."""
        kind = type(message)
        if kind is Offer or kind is Preview or kind is Result or kind is Checkpoint:
            return self._send_with_binaries(message)  # type: ignore[arg-type]
        try:
            data: bytes = self._packer.pack(encode(message, _no_binaries))
        except (TypeError, ValueError, OverflowError) as error:
            raise LocalProtocolError(f"cannot encode {kind.__name__}: {error}") from None
        self._check_size(message, len(data))
        if kind is Hello and len(data) > MAX_HELLO_SIZE:
            raise LocalProtocolError(
                f"Hello needs a frame of {len(data)} bytes, over the limit of {MAX_HELLO_SIZE} "
                "for Hello: advertise fewer styles or smaller thumbnails"
            )
        self._machine.sent(message)
        if kind is Bye or kind is Reject:
            self._closed_by_us = True
        return HEADER.pack(len(data)) + data

    def _send_with_binaries(self, message: Offer | Preview | Result | Checkpoint) -> bytes:
        out: list[bytes | memoryview] = []
        self._out = out  # where _put writes the chunk frames of the message's binaries
        try:
            body = encode(message, self._put)
            frame = pack_frame(self._packer, body)
        except (TypeError, ValueError, OverflowError) as error:
            raise LocalProtocolError(f"cannot encode {type(message).__name__}: {error}") from None
        finally:
            self._out = []
        self._check_size(message, len(frame) - 4)
        self._machine.sent(message)
        out.append(frame)
        return b"".join(out)

    def _check_size(self, message: Message, size: int) -> None:
        if size > self._send_limit:
            raise LocalProtocolError(
                f"{type(message).__name__} needs a frame of {size} bytes, "
                f"over the limit of {self._send_limit}"
            )

    def _put(self, data: bytes) -> tuple[int, str]:
        limits = self.peer_limits
        if limits is not None and len(data) > limits.max_transfer_size:
            raise LocalProtocolError(
                f"binary of {len(data)} bytes exceeds the peer's limit of "
                f"{limits.max_transfer_size} bytes"
            )
        return self._writer.write(data, self._out)

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Feed bytes from the peer; an empty piece means end of stream. Returns new messages.

        Raises RemoteProtocolError if the peer broke the protocol (messages decoded earlier in
        the same call are dropped: the connection is over); after that, only Bye may be sent.
        """
        if self._error is not None:
            raise RemoteProtocolError(f"the connection already failed: {self._error}")
        if self._eof:
            raise LocalProtocolError("receive_data called after the end of the stream")
        try:
            if not data:
                self._end_of_stream()
                return []
            if self._closed_by_us:
                return []  # we said Bye or Reject: whatever was in flight no longer matters
            bodies = self._reader.feed(data)
            self.frames_received += len(bodies)
            messages: list[Message] = []
            for body in bodies:
                message = self._body(body)
                if message is not None:
                    messages.append(message)
            return messages
        except RemoteProtocolError as error:
            self._error = error
            self._machine.fail()
            raise

    def _body(self, body: Body) -> Message | None:
        kind = body.get("type")
        if kind in ("chunk", "chunk_end"):  # a tuple: `kind` may be unhashable
            if self._machine.state not in _LIVE:
                raise RemoteProtocolError(
                    f"{kind} frame while the connection is {self._machine.state.value}"
                )
            if kind == "chunk":
                self._transfers.chunk(body)
            else:
                self._transfers.end(body)
            return None
        transfers = self._transfers
        if not transfers.busy or kind in _BETWEEN_CHUNKS:
            message = decode(body, transfers.claim)
        else:
            if transfers.open:
                raise RemoteProtocolError(f"a {kind!r} message arrived in the middle of a transfer")
            message = decode(body, transfers.claim)
            if transfers.unclaimed:
                raise RemoteProtocolError(
                    f"the {kind} message left {transfers.unclaimed} transfer(s) unclaimed"
                )
        self._machine.received(message)
        if type(message) is Hello:
            self._reader.set_limit(self.max_frame_size)
        elif type(message) is Welcome:
            self.peer_limits = message.limits
        return message

    def _end_of_stream(self) -> None:
        self._eof = True
        said_bye = self._machine.state is ConnectionState.CLOSED  # Bye or Reject, either way
        self._machine.close()
        if self._closed_by_us:
            return
        if self._reader.buffered:
            raise RemoteProtocolError(
                f"the stream ended in the middle of a frame ({self._reader.buffered} bytes "
                "of it received)"
            )
        if not said_bye and (self._transfers.open or self._transfers.unclaimed):
            raise RemoteProtocolError("the stream ended in the middle of a transfer")
