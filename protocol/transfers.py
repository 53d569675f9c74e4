"""Chunked transfers: how binaries travel (docs/protocol.md, "Transfers").

A binary is cut into `chunk` frames of at most CHUNK_SIZE bytes, numbered from 0, then one
`chunk_end` frame gives its total size and sha256. The message that carries the binary
follows and names it by transfer id. Transfer ids are per sender and strictly increasing;
one transfer is open at a time. The receiver enforces the size cap as chunks arrive and
checks order, size and digest at the end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .chunks import chunk_fields
from .errors import RemoteProtocolError
from .frames import HEADER, Body, pack_frame
from .limits import CHUNK_SIZE, MAX_UINT


@dataclass(frozen=True, slots=True)
class Received:
    """A reassembled binary and the sha256 hex digest it was checked against."""

    data: bytes
    sha256: str


class TransferWriter:
    """Assigns transfer ids and cuts binaries into chunk frames."""

    def __init__(self, packer: msgpack.Packer) -> None:
        self._packer = packer
        self._next_id = 1

    def write(self, data: bytes, out: list[bytes | memoryview]) -> tuple[int, str]:
        """Append the frames of one transfer to `out`; return its id and sha256 hex digest."""
        transfer_id = self._next_id
        self._next_id += 1
        digest = hashlib.sha256(data).hexdigest()
        view = memoryview(data)
        for seq, start in enumerate(range(0, len(data), CHUNK_SIZE)):
            piece = view[start : start + CHUNK_SIZE]
            fields = chunk_fields(self._packer, transfer_id, seq, len(piece))
            out.append(HEADER.pack(len(fields) + len(piece)) + fields)
            out.append(piece)  # joined by the caller: the data is copied once
        end = {"type": "chunk_end", "transfer": transfer_id, "size": len(data), "sha256": digest}
        out.append(pack_frame(self._packer, end))
        return transfer_id, digest


@dataclass(slots=True)
class _Open:
    id: int
    next_seq: int = 0
    size: int = 0
    sha: Any = field(default_factory=hashlib.sha256)
    parts: list[bytes | memoryview] = field(default_factory=list)


class TransferReader:
    """Reassembles incoming transfers and hands them to the message that claims them."""

    def __init__(self, max_transfer_size: int, max_pending: int) -> None:
        self.max_transfer_size = max_transfer_size
        self.max_pending = max_pending
        self._last_id = 0
        self._open: _Open | None = None
        self._done: dict[int, Received] = {}
        self.busy = False
        """Whether a transfer is open or finished but unclaimed (kept as a flag for speed)."""

    @property
    def open(self) -> bool:
        """Whether a transfer has started but not ended."""
        return self._open is not None

    @property
    def unclaimed(self) -> int:
        """How many finished transfers no message has claimed yet."""
        return len(self._done)

    def chunk(self, body: Body) -> None:
        """Take one `chunk` frame."""
        transfer = self._transfer_for(body)
        seq = body.get("seq")
        data = body.get("data")
        if seq != transfer.next_seq or type(seq) is not int:
            raise RemoteProtocolError(
                f"transfer {transfer.id}: expected chunk {transfer.next_seq}, got {seq!r}"
            )
        # A memoryview comes from chunks.parse_chunk: a slice of the peer's bytes, not a copy.
        if (type(data) is not bytes and type(data) is not memoryview) or not (
            0 < len(data) <= CHUNK_SIZE
        ):
            raise RemoteProtocolError(
                f"transfer {transfer.id}: chunk data must be 1 to {CHUNK_SIZE} bytes"
            )
        transfer.size += len(data)
        if transfer.size > self.max_transfer_size:
            raise RemoteProtocolError(
                f"transfer {transfer.id} exceeds the cap of {self.max_transfer_size} bytes"
            )
        transfer.next_seq += 1
        transfer.sha.update(data)
        transfer.parts.append(data)

    def end(self, body: Body) -> None:
        """Take a `chunk_end` frame: check size and digest, and keep the binary for its claim."""
        transfer = self._transfer_for(body)
        size = body.get("size")
        digest = body.get("sha256")
        if size != transfer.size or type(size) is not int:
            raise RemoteProtocolError(
                f"transfer {transfer.id}: announced size {size!r}, received {transfer.size} bytes"
            )
        actual = transfer.sha.hexdigest()
        if digest != actual:
            raise RemoteProtocolError(
                f"transfer {transfer.id}: sha256 mismatch (announced {digest!r}, got {actual})"
            )
        self._open = None
        self._done[transfer.id] = Received(b"".join(transfer.parts), actual)
        self.busy = True

    def claim(self, transfer_id: object) -> Received:
        """Hand over a finished transfer to the message that names it (once)."""
        received = self._done.pop(transfer_id, None) if type(transfer_id) is int else None
        if received is None:
            raise RemoteProtocolError(f"message names unknown transfer {transfer_id!r}")
        self.busy = self._open is not None or bool(self._done)
        return received

    def _transfer_for(self, body: Body) -> _Open:
        transfer_id = body.get("transfer")
        current = self._open
        if type(transfer_id) is not int:
            raise RemoteProtocolError(f"chunk names transfer {transfer_id!r}, not an integer id")
        if current is not None and transfer_id == current.id:
            return current
        if not self._last_id < transfer_id <= MAX_UINT:
            raise RemoteProtocolError(
                f"chunk names transfer {transfer_id}, but transfer ids must increase "
                f"(last was {self._last_id})"
            )
        if current is not None:
            raise RemoteProtocolError(
                f"transfer {transfer_id} starts while transfer {current.id} is still open"
            )
        if len(self._done) >= self.max_pending:
            raise RemoteProtocolError(
                f"more than {self.max_pending} transfers before the message that claims them"
            )
        self._last_id = transfer_id
        self._open = _Open(transfer_id)
        self.busy = True
        return self._open
