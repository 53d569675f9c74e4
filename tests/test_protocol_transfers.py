"""Chunked transfers: the hand-laid chunk frames, and the views the receiver keeps into the
caller's bytes only when those bytes cannot change."""

from __future__ import annotations

import struct

import msgpack
import pytest
from test_protocol_samples import handshaken

from protocol import CHUNK_SIZE, Offer, StyleImage
from protocol.chunks import chunk_fields, parse_chunk

BIG = bytes(range(256)) * 3000  # 768,000 bytes: three full chunks and a partial one
OFFER = Offer("job-1", "lease-1", "gatys", {}, None, (StyleImage(BIG[::-1], 1.0),), BIG)


def frame_ends(data: bytes) -> list[int]:
    """The offset just past each frame of a stream."""
    ends, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4 + size
        ends.append(pos)
    return ends


@pytest.mark.parametrize("transfer", [1, 127, 128, 2**16, 2**40])
def test_chunk_fields_are_plain_msgpack_that_parse_back(transfer: int) -> None:
    body = chunk_fields(msgpack.Packer(), transfer, 3, 5) + b"hello"
    assert msgpack.unpackb(body) == {"type": "chunk", "transfer": transfer, "seq": 3,
                                     "data": b"hello"}  # fmt: skip
    parsed = parse_chunk(memoryview(body))
    assert parsed is not None
    assert parsed[:2] == (transfer, 3)
    assert bytes(parsed[2]) == b"hello"


@pytest.mark.parametrize(
    "body",
    [
        msgpack.packb({"type": "chunk", "transfer": 1, "seq": 0, "data": b"x" * 100}),  # bin 8
        msgpack.packb({"transfer": 1, "type": "chunk", "seq": 0, "data": b"x" * 70_000}),
        msgpack.packb({"type": "chunk", "transfer": -1, "seq": 0, "data": b"x" * 70_000}),
        chunk_fields(msgpack.Packer(), 1, 0, 5) + b"hell",  # one byte short
        chunk_fields(msgpack.Packer(), 1, 0, 5) + b"hello!",  # one byte over
        chunk_fields(msgpack.Packer(), 1, 0, 5)[:20],
        b"",
    ],
)
def test_other_layouts_are_left_to_the_generic_decoder(body: bytes) -> None:
    assert parse_chunk(memoryview(body)) is None


def test_the_sender_cuts_binaries_into_full_chunks() -> None:
    relay, _ = handshaken()
    data = relay.send(OFFER)
    bodies = [msgpack.unpackb(data[start + 4 : end]) for start, end in
              zip([0, *frame_ends(data)], frame_ends(data), strict=False)]  # fmt: skip
    content = [b for b in bodies if b["type"] == "chunk" and b["transfer"] == 1]
    assert [len(b["data"]) for b in content] == [CHUNK_SIZE] * 2 + [len(BIG) - 2 * CHUNK_SIZE]
    assert [b["seq"] for b in content] == [0, 1, 2]
    assert bodies[3] == {"type": "chunk_end", "transfer": 1, "size": len(BIG),
                         "sha256": bodies[3]["sha256"]}  # fmt: skip
    assert bodies[-1]["content"] == 1
    assert bodies[-1]["style_images"] == [{"data": 2, "weight": 1.0}]


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_mutable_input_is_copied_before_the_caller_reuses_it(kind: type) -> None:
    relay, node = handshaken()
    data = relay.send(OFFER)
    cut = frame_ends(data)[1]  # after two whole chunk frames
    buffer = bytearray(data[:cut])
    piece = buffer if kind is bytearray else memoryview(buffer)
    assert node.receive_data(piece) == []
    del piece
    buffer[:] = bytes(len(buffer))  # the caller reuses its receive buffer...
    buffer.append(0)  # ...and may resize it: no view into it was kept
    assert node.receive_data(data[cut:]) == [OFFER]


def test_immutable_input_is_read_in_place_and_still_comes_back_whole() -> None:
    relay, node = handshaken()
    data = relay.send(OFFER)
    [offer] = node.receive_data(data)
    assert offer == OFFER
    assert isinstance(offer, Offer)
    assert type(offer.content) is bytes
