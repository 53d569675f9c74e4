"""The byte layout of `chunk` frames, written and read by hand.

Chunks carry nearly all the bytes on the wire. Packing one through a msgpack map would copy
its data into the body, and unpacking would copy it out again; this layout lets the sender
emit the data straight from the caller's buffer and the receiver slice it straight out of the
stream. The layout is ordinary msgpack, `{"type": "chunk", "transfer": t, "seq": n, "data":
<bin 32>}` with keys in that order; any other valid encoding of a chunk frame (from another
implementation) is not recognised here and takes the generic msgpack path instead.
"""

from __future__ import annotations

import struct

import msgpack

_START = b"\x84\xa4type\xa5chunk\xa8transfer"
_SEQ = b"\xa3seq"
_DATA = b"\xa4data\xc6"  # the key, then the bin 32 marker
_U32 = struct.Struct(">I")
# msgpack's unsigned integer markers and the widths they announce.
_UINTS = {
    0xCC: struct.Struct(">B"),
    0xCD: struct.Struct(">H"),
    0xCE: _U32,
    0xCF: struct.Struct(">Q"),
}


def chunk_fields(packer: msgpack.Packer, transfer: int, seq: int, size: int) -> bytes:
    """The body of a chunk frame up to its data; the `size` data bytes follow it."""
    transfer_bytes: bytes = packer.pack(transfer)
    seq_bytes: bytes = packer.pack(seq)
    return _START + transfer_bytes + _SEQ + seq_bytes + _DATA + _U32.pack(size)


def parse_chunk(body: memoryview) -> tuple[int, int, memoryview] | None:
    """Transfer id, seq and a view of the data of a chunk body laid out as `chunk_fields`
    writes it; None if the body is laid out any other way."""
    try:
        if body[: len(_START)] != _START:
            return None
        transfer, pos = _uint(body, len(_START))
        if body[pos : pos + len(_SEQ)] != _SEQ:
            return None
        seq, pos = _uint(body, pos + len(_SEQ))
        if body[pos : pos + len(_DATA)] != _DATA:
            return None
        (size,) = _U32.unpack_from(body, pos + len(_DATA))
        pos += len(_DATA) + 4
    except (IndexError, KeyError, struct.error):
        return None
    if pos + size != len(body):
        return None
    return transfer, seq, body[pos:]


def _uint(body: memoryview, pos: int) -> tuple[int, int]:
    marker = body[pos]
    if marker < 0x80:  # positive fixint
        return marker, pos + 1
    width = _UINTS[marker]  # KeyError: not an unsigned integer
    (value,) = width.unpack_from(body, pos + 1)
    return value, pos + 1 + width.size
