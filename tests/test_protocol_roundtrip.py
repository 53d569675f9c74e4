"""Every message through a relay and a node connection piped into each other, and the same
byte streams fed whole, byte by byte, in random pieces and with trailing bytes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol_samples import (
    HELLO,
    WELCOME,
    handshaken,
    node_messages,
    node_stream,
    relay_messages,
    relay_stream,
)

from protocol import (
    CHUNK_SIZE,
    Bye,
    ByeReason,
    Connection,
    ConnectionState,
    Message,
    Offer,
    Ping,
    Reject,
    RejectReason,
    Role,
)


def feed(conn: Connection, data: bytes, cuts: list[int]) -> list[Message]:
    """Feed `data` to `conn` cut at the given offsets; return every message received."""
    bounds = [0, *sorted(set(cuts)), len(data)]
    received: list[Message] = []
    for start, stop in itertools.pairwise(bounds):
        if start < stop:  # an empty piece would mean end of stream
            received += conn.receive_data(data[start:stop])
    return received


@pytest.mark.parametrize("big", [False, True])
def test_a_whole_conversation_round_trips(big: bool) -> None:
    relay, node = Connection(Role.RELAY), Connection(Role.NODE)
    assert relay.receive_data(node.send(HELLO)) == [HELLO]
    assert {relay.state, node.state} == {ConnectionState.AWAITING_WELCOME}
    for message in relay_messages(big):
        assert node.receive_data(relay.send(message)) == [message]
    assert relay.version == node.version == 2
    assert {relay.state, node.state} == {ConnectionState.ESTABLISHED}
    assert node.peer_limits == WELCOME.limits
    for message in node_messages(big):
        assert relay.receive_data(node.send(message)) == [message]
    assert {relay.state, node.state} == {ConnectionState.CLOSED}
    assert relay.receive_data(b"") == []


def test_binaries_come_back_as_equal_bytes() -> None:
    relay, node = handshaken()
    offer = relay_messages(True)[2]
    assert isinstance(offer, Offer)
    data = relay.send(offer)
    [received] = node.receive_data(data)
    assert isinstance(received, Offer)
    assert type(received.content) is bytes
    assert received.content == offer.content
    assert len(offer.content) > 2 * CHUNK_SIZE
    # 3 chunks + end for the content, the same for the first style image, an end for the
    # empty one, then the offer itself.
    assert node.frames_received - 1 == 4 + 4 + 1 + 1


def test_relay_rejects_and_both_sides_close() -> None:
    relay, node = Connection(Role.RELAY), Connection(Role.NODE)
    relay.receive_data(node.send(HELLO))
    reject = Reject(RejectReason.UNSUPPORTED_VERSION, "this relay speaks version 2 only")
    assert node.receive_data(relay.send(reject)) == [reject]
    assert {relay.state, node.state} == {ConnectionState.CLOSED}


def test_relay_may_say_bye() -> None:
    relay, node = handshaken()
    bye = Bye(ByeReason.SHUTDOWN, "relay restarting")
    assert node.receive_data(relay.send(bye)) == [bye]
    assert node.state is ConnectionState.CLOSED
    assert node.receive_data(b"") == []


def test_after_our_bye_incoming_frames_are_dropped() -> None:
    relay, node = handshaken()
    in_flight = node.send(Ping(5))
    relay.send(Bye(ByeReason.SHUTDOWN))
    assert relay.receive_data(in_flight) == []
    assert relay.receive_data(in_flight[:3]) == []
    assert relay.receive_data(b"") == []  # even mid-frame: we hung up first


@pytest.mark.parametrize("stream", [relay_stream, node_stream])
def test_streams_fed_whole_and_byte_by_byte(stream: object) -> None:
    conn, data, expected = stream(False)  # type: ignore[operator]
    assert conn.receive_data(data) == expected
    conn, data, expected = stream(False)  # type: ignore[operator]
    assert feed(conn, data, list(range(1, len(data)))) == expected
    assert conn.frames_received > len(expected)  # chunk frames count too


@pytest.mark.parametrize("stream", [relay_stream, node_stream])
def test_big_streams_in_fixed_pieces(stream: object) -> None:
    conn, data, expected = stream(True)  # type: ignore[operator]
    assert feed(conn, data, list(range(4093, len(data), 4093))) == expected


def test_trailing_bytes_wait_for_the_rest_of_their_frame() -> None:
    conn, data, expected = relay_stream(False)
    tail = handshaken()[0].send(Ping(99))  # a frame the relay may send next
    assert conn.receive_data(data + tail[:2]) == expected
    assert conn.receive_data(tail[2:7]) == []
    assert conn.receive_data(tail[7:]) == [Ping(99)]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), big=st.booleans(), towards_node=st.booleans())
def test_any_split_decodes_the_same(data: st.DataObject, big: bool, towards_node: bool) -> None:
    conn, stream, expected = (relay_stream if towards_node else node_stream)(big)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    assert feed(conn, stream, cuts) == expected
