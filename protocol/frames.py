"""Framing: a 4-byte big-endian body length, then one msgpack map.

`FrameReader` splits a byte stream fed in arbitrary pieces into decoded frame bodies. The
length prefix is checked against `max_frame_size` as soon as its 4 bytes are in, before any
of the body is buffered, so a hostile prefix costs nothing. Bodies are decoded with explicit
msgpack limits, string map keys only, no extension types; any decoding failure becomes a
`RemoteProtocolError`.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from .chunks import parse_chunk
from .errors import ProtocolError, RemoteProtocolError
from .limits import MAX_ITEMS, MAX_TEXT_LEN

HEADER = struct.Struct(">I")
"""The frame header: the body length as an unsigned 32-bit big-endian integer."""

Body = dict[str, Any]
"""A decoded frame body: a msgpack map with string keys."""

# Strings are counted in bytes by msgpack; a text of MAX_TEXT_LEN characters may need 4x that.
_MAX_STR_BYTES = 4 * MAX_TEXT_LEN


_COPY_BELOW = 4096


def _refuse_ext(code: int, data: bytes) -> object:
    raise RemoteProtocolError(f"msgpack extension types are not allowed (got ext type {code})")


def pack_frame(packer: msgpack.Packer, body: Body) -> bytes:
    """Encode one frame: header plus the msgpack encoding of `body`."""
    data: bytes = packer.pack(body)
    return HEADER.pack(len(data)) + data


class FrameReader:
    """Turns a byte stream, fed in pieces of any size, into decoded frame bodies."""

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._unpack_options: dict[str, Any] = {
            "raw": False,
            "strict_map_key": True,
            "use_list": True,
            "ext_hook": _refuse_ext,
            "max_bin_len": max_frame_size,
            "max_str_len": min(_MAX_STR_BYTES, max_frame_size),
            "max_array_len": MAX_ITEMS,
            "max_map_len": MAX_ITEMS,
        }
        # Small bodies go through one reused Unpacker: unpackb parses its nine options on
        # every call, which costs more than decoding a small map. A failed decode leaves it
        # in a bad state, but then the connection is over anyway.
        self._unpacker = msgpack.Unpacker(max_buffer_size=_COPY_BELOW, **self._unpack_options)

    def set_limit(self, max_frame_size: int) -> None:
        """Accept frames of up to `max_frame_size` bytes from now on."""
        self.max_frame_size = max_frame_size
        self._unpack_options["max_bin_len"] = max_frame_size
        self._unpack_options["max_str_len"] = min(_MAX_STR_BYTES, max_frame_size)

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete frame are waiting for the rest."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Body]:
        """Take the next piece of the stream; return the bodies of the frames it completes."""
        buffer = self._buffer
        if not buffer and len(data) > 4:
            # The common case, a piece that is exactly one small frame, skips the loop.
            (size,) = HEADER.unpack_from(data)
            if size + 4 == len(data) and size <= _COPY_BELOW and size <= self.max_frame_size:
                return [self._decode_small(data[4:])]
        bodies: list[Body] = []
        if not buffer:
            # Fast path: decode straight out of the caller's bytes; keep only the tail.
            used = self._split(data, bodies, stable=type(data) is bytes)
            if used < len(data):
                buffer += memoryview(data)[used:]
            return bodies
        buffer += data
        used = self._split(buffer, bodies, stable=False)
        del buffer[:used]
        return bodies

    def _split(
        self, data: bytes | bytearray | memoryview, bodies: list[Body], *, stable: bool
    ) -> int:
        """Decode every complete frame at the start of `data`; return the bytes consumed.

        `stable`: `data` is immutable, so chunk bodies may keep views into it.
        """
        end = len(data)
        pos = 0
        limit = self.max_frame_size
        while end - pos >= 4:
            (size,) = HEADER.unpack_from(data, pos)
            if size > limit:
                raise RemoteProtocolError(
                    f"frame of {size} bytes exceeds the limit of {limit} bytes"
                )
            if size == 0:
                raise RemoteProtocolError("empty frame: a frame body must be a msgpack map")
            stop = pos + 4 + size
            if stop > end:
                break
            if size <= _COPY_BELOW:
                bodies.append(self._decode_small(data[pos + 4 : stop]))
            else:
                bodies.append(self._decode_large(memoryview(data)[pos + 4 : stop], stable))
            pos = stop
        return pos

    def _decode_small(self, body: bytes | bytearray | memoryview) -> Body:
        unpacker = self._unpacker
        try:
            start = unpacker.tell()
            unpacker.feed(body)
            value = unpacker.unpack()
            if unpacker.tell() - start != len(body):
                raise ValueError("the frame holds more than one msgpack value")
        except ProtocolError:
            raise
        except Exception as error:  # msgpack raises a dozen unrelated types
            raise RemoteProtocolError(f"frame body is not valid msgpack: {error}") from None
        if type(value) is not dict:
            raise RemoteProtocolError(
                f"frame body must be a msgpack map, got {type(value).__name__}"
            )
        return value

    def _decode_large(self, body: memoryview, stable: bool) -> Body:
        chunk = parse_chunk(body)
        if chunk is None:
            return self._decode(body)
        transfer, seq, data = chunk
        if not stable:
            data = data.tobytes()  # type: ignore[assignment]  # the buffer will change
            body.release()
        return {"type": "chunk", "transfer": transfer, "seq": seq, "data": data}

    def _decode(self, body: memoryview) -> Body:
        try:
            value = msgpack.unpackb(body, **self._unpack_options)
        except ProtocolError:
            raise
        except Exception as error:  # msgpack raises a dozen unrelated types
            raise RemoteProtocolError(f"frame body is not valid msgpack: {error}") from None
        finally:
            if type(body) is memoryview:
                body.release()  # so that the caller's buffer may be resized afterwards
        if type(value) is not dict:
            raise RemoteProtocolError(
                f"frame body must be a msgpack map, got {type(value).__name__}"
            )
        return value
