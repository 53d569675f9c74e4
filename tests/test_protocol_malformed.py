"""Garbage from the peer: every case raises RemoteProtocolError with a clear message, and
nothing from msgpack, struct or dict lookups leaks out."""

from __future__ import annotations

import hashlib
import struct
import tracemalloc
from typing import Any

import msgpack
import pytest
from test_protocol_samples import HELLO, WELCOME, handshaken, node_messages, relay_messages

from protocol import (
    Accept,
    Connection,
    ConnectionState,
    Message,
    Offer,
    RemoteProtocolError,
    Role,
)
from protocol.codec import encode


def frame(body: object) -> bytes:
    """One frame around any msgpack-able body."""
    data: bytes = msgpack.packb(body)
    return struct.pack(">I", len(data)) + data


def raw(data: bytes) -> bytes:
    """One frame around raw body bytes."""
    return struct.pack(">I", len(data)) + data


def accepted(**limits: int) -> tuple[Connection, Connection]:
    """Relay and node with lease-1 (job-1) offered and accepted."""
    relay, node = Connection(Role.RELAY, **limits), Connection(Role.NODE)
    relay.receive_data(node.send(HELLO))
    node.receive_data(relay.send(WELCOME))
    node.receive_data(relay.send(Offer("job-1", "lease-1", "fast", {}, "mosaic", (), b"c")))
    relay.receive_data(node.send(Accept("job-1", "lease-1")))
    return relay, node


def chunk_frames(
    transfer: int, data: bytes, *, size: int | None = None, sha: str | None = None
) -> list[bytes]:
    """The frames of a transfer in 1000-byte chunks, optionally with a wrong size or digest."""
    out = [
        frame({"type": "chunk", "transfer": transfer, "seq": seq, "data": data[i : i + 1000]})
        for seq, i in enumerate(range(0, len(data), 1000))
    ]
    end = {
        "type": "chunk_end",
        "transfer": transfer,
        "size": len(data) if size is None else size,
        "sha256": hashlib.sha256(data).hexdigest() if sha is None else sha,
    }
    return [*out, frame(end)]


def chunks(transfer: int, data: bytes, *, size: int | None = None, sha: str | None = None) -> bytes:
    """The bytes of `chunk_frames`."""
    return b"".join(chunk_frames(transfer, data, size=size, sha=sha))


def result_frame(transfer: int, data: bytes) -> bytes:
    return frame({"type": "result", "job_id": "job-1", "lease_id": "lease-1", "png": transfer,
                  "width": 1, "height": 1, "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip


def refuses(conn: Connection, data: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        conn.receive_data(data)
    assert conn.state is ConnectionState.ERROR


# --- framing ------------------------------------------------------------------------------


def test_a_4_gib_length_prefix_fails_at_once_without_allocating() -> None:
    conn = Connection(Role.RELAY)
    tracemalloc.start()
    try:
        refuses(conn, b"\xff\xff\xff\xff", "frame of 4294967295 bytes exceeds the limit")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_the_length_is_checked_before_the_body_arrives() -> None:
    conn = Connection(Role.RELAY, max_frame_size=400_000)
    assert conn.receive_data(b"\x00") == []
    refuses(conn, struct.pack(">I", 400_001)[1:], "400001 bytes exceeds the limit of 400000")


def test_a_failed_connection_keeps_failing() -> None:
    conn = Connection(Role.RELAY)
    refuses(conn, b"\xff\xff\xff\xff", "exceeds")
    with pytest.raises(RemoteProtocolError, match="already failed"):
        conn.receive_data(frame({"type": "ping", "nonce": 1}))


@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_a_stream_ending_mid_frame_is_an_error(cut: int) -> None:
    conn = Connection(Role.RELAY)
    assert conn.receive_data(Connection(Role.NODE).send(HELLO)[:cut]) == []
    with pytest.raises(RemoteProtocolError, match="ended in the middle of a frame"):
        conn.receive_data(b"")


def test_a_clean_end_of_stream_closes() -> None:
    relay, _ = handshaken()
    assert relay.receive_data(b"") == []
    assert relay.state is ConnectionState.CLOSED


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "empty frame"),
        (msgpack.packb(7), "must be a msgpack map, got int"),
        (msgpack.packb([1, 2]), "must be a msgpack map, got list"),
        (msgpack.packb("hello"), "must be a msgpack map, got str"),
        (msgpack.packb(None), "must be a msgpack map, got NoneType"),
        (b"\xc1", "not valid msgpack"),  # a byte msgpack never uses
        (b"\x92\x01", "not valid msgpack"),  # an array of 2 holding 1 item
        (msgpack.packb({"type": "ping"}) + b"\x01", "not valid msgpack"),  # two objects
        (b"\x81\xa4type\xa2\xff\xfe", "not valid msgpack"),  # invalid UTF-8
        (b"\x81\x01\x02", "not valid msgpack"),  # an integer map key
        (b"\xdd\xff\xff\xff\xff", "not valid msgpack"),  # an array of 4 billion items
        (b"\x81\xa4type\xd4\x05\x00", "extension types are not allowed"),
        (b"\x91" * 3000 + b"\x01", "not valid msgpack"),  # nested too deep
    ],
)
def test_bodies_that_are_not_a_valid_map(body: bytes, match: str) -> None:
    refuses(Connection(Role.RELAY), raw(body), match)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"nonce": 1}, "unknown message type None"),
        ({"type": "hack"}, "unknown message type 'hack'"),
        ({"type": 5}, "unknown message type 5"),
        ({"type": ["ping"]}, r"unknown message type \['ping'\]"),
        ({b"type": "ping"}, "unknown message type None"),
    ],
)
def test_unknown_message_types(body: dict[Any, Any], match: str) -> None:
    relay, _ = handshaken()
    refuses(relay, frame(body), match)


# --- fields --------------------------------------------------------------------------------


def _bodies() -> list[tuple[Message, dict[str, Any]]]:
    out = []
    for message in [HELLO, *relay_messages(False), *node_messages(False)]:
        out.append((message, encode(message, lambda data: (1, hashlib.sha256(data).hexdigest()))))
    return out


@pytest.mark.parametrize(
    ("message", "key"),
    [(m, k) for m, body in _bodies() for k in body if k != "type"],
    ids=lambda x: type(x).__name__ if not isinstance(x, str) else x,
)
def test_missing_fields(message: Message, key: str) -> None:
    body = encode(message, lambda data: (1, hashlib.sha256(data).hexdigest()))
    del body[key]
    relay, node = handshaken()
    receiver = relay if type(message).__name__ in {"Hello", *_NODE_SENT} else node
    with pytest.raises(RemoteProtocolError, match=f"lacks the field '{key}'|unknown transfer"):
        receiver.receive_data(frame(_tuples_to_lists(body)))


_NODE_SENT = {
    "Accept",
    "Decline",
    "Progress",
    "Preview",
    "Checkpoint",
    "Result",
    "Failure",
    "Drain",
}


def _tuples_to_lists(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_tuples_to_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _tuples_to_lists(v) for k, v in value.items()}
    return value


def _progress(**changes: object) -> bytes:
    body = {"type": "progress", "job_id": "job-1", "lease_id": "lease-1", "epoch": 1,
            "max_epochs": 10, "losses": {"style": 1.0}, "elapsed": 0.5}  # fmt: skip
    return frame({**body, **changes})


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_progress(epoch="3"), "Progress.epoch must be an integer"),
        (_progress(epoch=True), "Progress.epoch must be an integer"),
        (_progress(epoch=11), r"Progress.epoch must be an integer in \[0, 10\]"),
        (_progress(losses=[1.0]), "Progress.losses must be a dict"),
        (_progress(losses={"style": "big"}), "Progress.losses must be a dict of str to float"),
        (_progress(elapsed=None), "Progress.elapsed must be a float"),
        (_progress(job_id=""), "Progress.job_id must be a non-empty string"),
        (_progress(lease_id=b"lease-1"), "Progress.lease_id must be a non-empty string"),
        (_progress(max_epochs=2**64 - 1), r"Progress.max_epochs must be an integer in \[1, "),
        (frame({"type": "ping", "nonce": -1}), r"Ping.nonce must be an integer in \[0, "),
        (
            frame(
                {
                    "type": "failure",
                    "job_id": "job-1",
                    "lease_id": "lease-1",
                    "code": "nope",
                    "message": "",
                }
            ),
            "'nope' is not a valid FailureCode",
        ),
        (frame({"type": "bye", "reason": 3, "message": ""}), "3 is not a valid ByeReason"),
        (frame({"type": "accept", "job_id": "job-1", "lease_id": {"a": 1}}), "Accept.lease_id"),
    ],
)
def test_wrong_field_types(data: bytes, match: str) -> None:
    relay, _ = accepted()
    refuses(relay, data, match)


def test_deeply_nested_values_are_described_without_recursing() -> None:
    nested: object = 1
    for _ in range(1000):
        nested = [nested]
    relay, _ = accepted()
    refuses(relay, frame({"type": "ping", "nonce": nested}), r"got list \[\[\[\[\.\.\.\]\]\]\]")


def test_whole_numbers_may_arrive_as_integers_where_floats_are_expected() -> None:
    relay, _ = accepted()
    [progress] = relay.receive_data(_progress(elapsed=3, losses={"style": 2}))
    assert progress.elapsed == 3.0 and type(progress.elapsed) is float  # type: ignore[union-attr]
    assert progress.losses == {"style": 2.0}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"versions": "1"}, "expected an array"),
        ({"versions": [1, "2"]}, "Hello.versions must be a tuple of int"),
        ({"node_name": 7}, "Hello.node_name must be a non-empty string"),
        ({"capabilities": []}, "expected a map"),
        ({"capabilities": {"device_name": "x"}}, "lacks the field"),
    ],
)
def test_a_bad_hello(changes: dict[str, object], match: str) -> None:
    body = _tuples_to_lists(encode(HELLO, lambda d: (0, "")))
    relay = Connection(Role.RELAY)
    refuses(relay, frame({**body, **changes}), match)


def test_unknown_fields_are_ignored() -> None:
    relay, _ = accepted()
    [progress] = relay.receive_data(_progress(gpu_temperature=71))
    assert progress.epoch == 1  # type: ignore[union-attr]


# --- transfers -----------------------------------------------------------------------------

PNG = b"\x89PNG" + bytes(range(256)) * 20


def test_a_hand_made_transfer_is_accepted() -> None:
    relay, _ = accepted()
    [result] = relay.receive_data(chunks(1, PNG) + result_frame(1, PNG))
    assert result.png == PNG  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (chunks(1, PNG, sha="0" * 64), "transfer 1: sha256 mismatch"),
        (chunks(1, PNG, sha=None, size=len(PNG) + 1), "announced size 5125, received 5124"),
        (chunks(1, PNG, size=len(PNG) - 1), "announced size 5123, received 5124"),
        (
            frame({"type": "chunk", "transfer": 1, "seq": 1, "data": b"x"}),
            "transfer 1: expected chunk 0, got 1",
        ),
        (
            frame({"type": "chunk", "transfer": 1, "seq": 0, "data": b"x"}) * 2,
            "expected chunk 1, got 0",
        ),
        (frame({"type": "chunk", "transfer": 1, "seq": 0, "data": b""}), "must be 1 to 262144"),
        (frame({"type": "chunk", "transfer": 1, "seq": 0, "data": "text"}), "must be 1 to"),
        (
            frame({"type": "chunk", "transfer": 1, "seq": 0, "data": b"x" * 300_000}),
            "must be 1 to 262144 bytes",
        ),
        (frame({"type": "chunk", "transfer": "1", "seq": 0, "data": b"x"}), "not an integer id"),
        (frame({"type": "chunk", "transfer": 0, "seq": 0, "data": b"x"}), "ids must increase"),
        (chunks(3, b"a") + chunks(2, b"b"), "transfer 2, but transfer ids must increase"),
        (
            frame({"type": "chunk", "transfer": 1, "seq": 0, "data": b"x"}) + chunks(2, b"b"),
            "transfer 2 starts while transfer 1 is still open",
        ),
        (chunks(1, b"a") + chunks(2, b"b"), "more than 1 transfers before the message"),
        (chunks(1, PNG) + result_frame(2, PNG), "names unknown transfer 2"),
        (chunks(1, PNG) + _progress(), "the progress message left 1 transfer"),
        (
            b"".join(chunk_frames(1, PNG)[:-1]) + result_frame(1, PNG),
            "'result' message arrived in the middle of a transfer",
        ),
        (chunks(1, PNG) + result_frame(1, b"other"), "sha256 .* is not that of its PNG"),
    ],
)
def test_bad_chunk_streams(data: bytes, match: str) -> None:
    relay, _ = accepted()
    refuses(relay, data, match)


def test_the_transfer_cap_is_enforced_as_chunks_arrive() -> None:
    relay, _ = accepted(max_transfer_size=2500)
    first, second, third, _end = chunk_frames(1, b"x" * 3000)
    assert relay.receive_data(first + second) == []
    refuses(relay, third, "transfer 1 exceeds the cap of 2500 bytes")


def test_the_cap_applies_to_each_transfer_not_the_connection() -> None:
    relay, _ = accepted(max_transfer_size=2500)
    data = b"y" * 2500
    preview = frame({"type": "preview", "job_id": "job-1", "lease_id": "lease-1", "epoch": 1,
                     "jpeg": 1})  # fmt: skip
    messages = relay.receive_data(
        chunks(1, data) + preview + chunks(2, data) + result_frame(2, data)
    )
    assert [type(m).__name__ for m in messages] == ["Preview", "Result"]


def test_a_stream_ending_mid_transfer_is_an_error() -> None:
    relay, _ = accepted()
    relay.receive_data(chunks(1, PNG))
    with pytest.raises(RemoteProtocolError, match="ended in the middle of a transfer"):
        relay.receive_data(b"")


def test_a_bye_may_abandon_a_transfer() -> None:
    relay, _ = accepted()
    bye = frame({"type": "bye", "reason": "shutdown", "message": "power off"})
    assert len(relay.receive_data(chunk_frames(1, PNG)[0] + bye)) == 1
    assert relay.receive_data(b"") == []


def test_chunks_before_the_handshake_are_refused() -> None:
    refuses(
        Connection(Role.RELAY),
        chunks(1, b"x"),
        "chunk frame while the connection is awaiting hello",
    )


def test_pings_may_come_between_chunks() -> None:
    relay, _ = accepted()
    frames = chunk_frames(1, PNG)
    ping = frame({"type": "ping", "nonce": 4})
    data = b"".join([*frames[:2], ping, *frames[2:], ping, result_frame(1, PNG)])
    messages = relay.receive_data(data)
    assert [type(m).__name__ for m in messages] == ["Ping", "Ping", "Result"]
