"""The legal order per side: illegal messages from the peer raise RemoteProtocolError, from
our own code LocalProtocolError, and a refused send changes nothing."""

from __future__ import annotations

import struct

import msgpack
import pytest
from test_protocol_samples import CAPS, HELLO, LIMITS, WELCOME, handshaken

from protocol import (
    Accept,
    Bye,
    ByeReason,
    Cancel,
    Capabilities,
    Checkpoint,
    Connection,
    ConnectionState,
    Decline,
    DeclineReason,
    Drain,
    Failure,
    FailureCode,
    Hello,
    LocalProtocolError,
    Message,
    Offer,
    Ping,
    Pong,
    Progress,
    Reject,
    RejectReason,
    RemoteProtocolError,
    Result,
    Role,
    StyleInfo,
    Welcome,
    choose_version,
)
from protocol.codec import encode

OFFER = Offer("job-1", "lease-1", "fast", {}, "mosaic", (), b"content")
ACCEPT = Accept("job-1", "lease-1")
PROGRESS = Progress("job-1", "lease-1", 1, 10, {"style": 1.0}, 0.1)
RESULT = Result.for_png("job-1", "lease-1", b"png", 1, 1)


def offered() -> tuple[Connection, Connection]:
    relay, node = handshaken()
    node.receive_data(relay.send(OFFER))
    return relay, node


def running() -> tuple[Connection, Connection]:
    relay, node = offered()
    relay.receive_data(node.send(ACCEPT))
    return relay, node


def wire(message: Message) -> bytes:
    """The bytes of `message` from a peer that ignores the rules (only Offer has binaries)."""
    if isinstance(message, Offer):
        return handshaken()[0].send(message)
    data: bytes = msgpack.packb(encode(message, _no_binaries))
    return struct.pack(">I", len(data)) + data


def _no_binaries(data: bytes) -> tuple[int, str]:
    raise AssertionError("not for messages with binaries")


# --- the peer breaks the order ----------------------------------------------------------


def test_the_first_message_must_be_hello() -> None:
    relay = Connection(Role.RELAY)
    with pytest.raises(RemoteProtocolError, match=r"may not send Ping while .* awaiting hello"):
        relay.receive_data(wire(Ping(1)))


def test_hello_twice() -> None:
    relay = Connection(Role.RELAY)
    hello = Connection(Role.NODE).send(HELLO)
    relay.receive_data(hello)
    with pytest.raises(RemoteProtocolError, match=r"may not send Hello while .* awaiting welcome"):
        relay.receive_data(hello)


def test_offer_before_welcome() -> None:
    node = Connection(Role.NODE)
    node.send(HELLO)
    with pytest.raises(RemoteProtocolError, match="awaiting welcome"):
        node.receive_data(wire(OFFER))


def test_only_the_relay_sends_offers() -> None:
    relay, _ = handshaken()
    with pytest.raises(RemoteProtocolError, match="the node may not send Offer: only the relay"):
        relay.receive_data(wire(OFFER))


def test_welcome_must_choose_an_offered_version() -> None:
    node = Connection(Role.NODE)
    node.send(Hello((1, 2), "n", "", "", CAPS))
    other = Connection(Role.RELAY)
    other.receive_data(Connection(Role.NODE).send(Hello((2, 7), "n", "", "", CAPS)))
    # A relay that speaks version 7 answers a Hello offering (2, 7); our node offered 1, 2.
    body = other.send(WELCOME).replace(b"\xa7version\x02", b"\xa7version\x07")
    with pytest.raises(RemoteProtocolError, match="Welcome chooses version 7"):
        node.receive_data(body)


@pytest.mark.parametrize(
    ("setup", "message", "match"),
    [
        (handshaken, ACCEPT, "Accept names lease 'lease-1', which is not open"),
        (offered, PROGRESS, "Progress for lease 'lease-1' before its Accept"),
        (running, Accept("job-1", "lease-1"), "which was already accepted"),
        (running, Decline("job-1", "lease-1", DeclineReason.BUSY), "already accepted"),
        (running, Accept("job-2", "lease-1"), "names job 'job-2', but lease 'lease-1' is for"),
    ],
)
def test_job_messages_must_follow_their_lease(setup: object, message: object, match: str) -> None:
    relay, _ = setup()  # type: ignore[operator]
    with pytest.raises(RemoteProtocolError, match=match):
        relay.receive_data(wire(message))  # type: ignore[arg-type]


def test_a_result_ends_the_lease() -> None:
    relay, node = running()
    data = node.send(RESULT)
    relay.receive_data(data)
    with pytest.raises(RemoteProtocolError, match="not open"):
        relay.receive_data(wire(PROGRESS))


def test_accept_after_drain() -> None:
    relay, node = offered()
    relay.receive_data(node.send(Drain()))
    assert relay.state is ConnectionState.DRAINING
    with pytest.raises(RemoteProtocolError, match=r"may not send Accept while .* draining"):
        relay.receive_data(wire(ACCEPT))


def test_nothing_after_the_peers_bye() -> None:
    relay, node = handshaken()
    relay.receive_data(node.send(Bye(ByeReason.SHUTDOWN)))
    with pytest.raises(
        RemoteProtocolError, match="may not send Ping while the connection is closed"
    ):
        relay.receive_data(wire(Ping(1)))


# --- messages that cross in flight are legal --------------------------------------------


def test_an_offer_crossing_the_nodes_drain_is_legal_and_declined() -> None:
    relay, node = handshaken()
    drain, offer = node.send(Drain()), relay.send(OFFER)
    assert node.receive_data(offer) == [OFFER]  # sent before the relay saw Drain
    assert relay.receive_data(drain) == [Drain()]
    decline = Decline("job-1", "lease-1", DeclineReason.DRAINING)
    assert relay.receive_data(node.send(decline)) == [decline]


def test_a_cancel_crossing_the_nodes_result_is_legal() -> None:
    relay, node = running()
    result, cancel = node.send(RESULT), relay.send(Cancel("job-1", "lease-1"))
    assert node.receive_data(cancel) == [Cancel("job-1", "lease-1")]
    assert relay.receive_data(result) == [RESULT]


def test_both_sides_count_open_leases() -> None:
    relay, node = running()
    assert relay.open_leases == node.open_leases == 1
    relay.receive_data(node.send(RESULT))
    assert relay.open_leases == node.open_leases == 0


def test_a_cancelled_job_ends_with_failure() -> None:
    relay, node = running()
    node.receive_data(relay.send(Cancel("job-1", "lease-1")))
    failure = Failure("job-1", "lease-1", FailureCode.CANCELLED)
    assert relay.receive_data(node.send(failure)) == [failure]
    with pytest.raises(LocalProtocolError, match="not open"):
        relay.send(Cancel("job-1", "lease-1"))


# --- our own code breaks the order ------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "role", "message", "match"),
    [
        (Connection, Role.NODE, Ping(1), "may not send Ping while .* awaiting hello"),
        (Connection, Role.RELAY, WELCOME, "may not send Welcome while .* awaiting hello"),
        (Connection, Role.RELAY, HELLO, "the relay may not send Hello: only the node"),
        (handshaken, Role.NODE, OFFER, "the node may not send Offer: only the relay"),
        (handshaken, Role.RELAY, PROGRESS, "the relay may not send Progress"),
        (handshaken, Role.RELAY, WELCOME, "may not send Welcome while .* established"),
        (handshaken, Role.NODE, PROGRESS, "names lease 'lease-1', which is not open"),
        (handshaken, Role.RELAY, Cancel("job-1", "lease-1"), "which is not open"),
        (offered, Role.RELAY, OFFER, "Offer reuses lease 'lease-1'"),
        (running, Role.NODE, Decline("job-1", "lease-1", DeclineReason.BUSY), "already"),
    ],
)
def test_illegal_sends(setup: object, role: Role, message: object, match: str) -> None:
    if setup is Connection:
        conn = Connection(role)
    else:
        relay, node = setup()  # type: ignore[operator]
        conn = relay if role is Role.RELAY else node
    with pytest.raises(LocalProtocolError, match=match):
        conn.send(message)  # type: ignore[arg-type]


def test_no_offer_after_the_node_drains() -> None:
    relay, node = handshaken()
    relay.receive_data(node.send(Drain()))
    with pytest.raises(LocalProtocolError, match=r"may not send Offer while .* draining"):
        relay.send(OFFER)
    with pytest.raises(LocalProtocolError, match=r"may not send Accept while .* draining"):
        node.send(Accept("job-9", "lease-9"))
    with pytest.raises(LocalProtocolError, match=r"may not send Drain while .* draining"):
        node.send(Drain())


def test_nothing_after_our_bye_or_reject() -> None:
    relay, node = handshaken()
    node.send(Bye(ByeReason.SHUTDOWN))
    with pytest.raises(LocalProtocolError, match="closed"):
        node.send(Pong(1))
    relay = Connection(Role.RELAY)
    relay.receive_data(Connection(Role.NODE).send(HELLO))
    relay.send(Reject(RejectReason.BAD_TOKEN))
    with pytest.raises(LocalProtocolError, match="closed"):
        relay.send(WELCOME)


def test_welcome_must_choose_a_version_both_speak() -> None:
    relay = Connection(Role.RELAY)
    relay.receive_data(Connection(Role.NODE).send(Hello((7, 8), "n", "", "", CAPS)))
    with pytest.raises(LocalProtocolError, match=r"offered \[7, 8\] and we speak \[1, 2, 3\]"):
        relay.send(WELCOME)
    assert relay.state is ConnectionState.AWAITING_WELCOME
    relay.send(Reject(RejectReason.UNSUPPORTED_VERSION, "versions 1 to 3 only"))


def test_a_refused_send_changes_nothing() -> None:
    relay, node = running()
    with pytest.raises(LocalProtocolError):
        relay.send(OFFER)  # lease-1 is open
    relay.receive_data(node.send(PROGRESS))  # lease-1 is still accepted
    with pytest.raises(LocalProtocolError, match="not the PNG's sha256"):
        node.send(Result("job-1", "lease-1", b"png", 1, 1, "0" * 64))
    assert relay.receive_data(node.send(RESULT)) == [RESULT]


def test_sending_respects_the_peers_transfer_limit() -> None:
    _, node = running()
    assert node.peer_limits == LIMITS
    big = Connection(Role.NODE)
    relay2 = Connection(Role.RELAY, max_transfer_size=100)
    relay2.receive_data(big.send(HELLO))
    big.receive_data(relay2.send(Welcome(1, "s", 5.0, relay2.advertised_limits(10, 10))))
    big.receive_data(relay2.send(OFFER))
    big.send(ACCEPT)
    with pytest.raises(LocalProtocolError, match="binary of 101 bytes exceeds the peer's limit"):
        big.send(Result.for_png("job-1", "lease-1", b"p" * 101, 1, 1))


def test_a_message_too_big_for_a_frame() -> None:
    thumbs = tuple(StyleInfo(f"s{i}", "S", "fast", b"j" * 32 * 1024) for i in range(40))
    hello = Hello((1,), "n", "", "", Capabilities("cpu", 0, ("fast",), thumbs, 1, 1, 1))
    with pytest.raises(LocalProtocolError, match=r"needs a frame of 13\d{5} bytes, over the limit"):
        Connection(Role.NODE).send(hello)
    # Accepting larger frames does not mean sending them: peers only promise 1 MiB.
    with pytest.raises(LocalProtocolError, match="over the limit of 1048576"):
        Connection(Role.NODE, max_frame_size=4 * 2**20).send(hello)


def test_only_messages_can_be_sent() -> None:
    with pytest.raises(LocalProtocolError, match="not a protocol message: dict"):
        Connection(Role.NODE).send({"type": "hello"})  # type: ignore[arg-type]


def test_after_a_remote_error_only_bye_or_reject() -> None:
    relay, node = handshaken()
    with pytest.raises(RemoteProtocolError):
        relay.receive_data(b"\xff\xff\xff\xff")
    assert relay.state is ConnectionState.ERROR
    with pytest.raises(LocalProtocolError, match="failed"):
        relay.send(Ping(1))
    bye = Bye(ByeReason.PROTOCOL_ERROR, "frame too large")
    assert node.receive_data(relay.send(bye)) == [bye]
    # A relay that got a bad Hello may still tell the node why.
    relay = Connection(Role.RELAY)
    with pytest.raises(RemoteProtocolError):
        relay.receive_data(b"\x00\x00\x00\x01\xc1")
    relay.send(Reject(RejectReason.INVALID_HELLO, "bad msgpack"))


def test_receive_after_end_of_stream_is_our_mistake() -> None:
    relay, _ = handshaken()
    relay.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after the end of the stream"):
        relay.receive_data(b"\x00")
    with pytest.raises(LocalProtocolError, match="closed"):
        relay.send(Ping(1))


def test_connection_limits_are_checked() -> None:
    with pytest.raises(LocalProtocolError, match="max_frame_size must be at least"):
        Connection(Role.NODE, max_frame_size=1000)
    with pytest.raises(LocalProtocolError, match="max_transfer_size must be positive"):
        Connection(Role.NODE, max_transfer_size=0)


# --- what version 2 added is refused on a version-1 connection ---------------------------

V1_HELLO = Hello((1,), "old-node", "", "0.0.9", CAPS)
V1_WELCOME = Welcome(1, "session-1", 10.0, LIMITS)
CHECKPOINT = Checkpoint("job-1", "lease-1", 4, b"\x89PNG checkpoint", 1, 1)
RESUMED = Offer("job-1", "lease-1", "gatys", {}, None, (), b"content", b"\x89PNG start", 4)


def running_v1() -> tuple[Connection, Connection]:
    """A relay and an old node that speaks only version 1, with lease-1 accepted."""
    relay, node = Connection(Role.RELAY), Connection(Role.NODE)
    relay.receive_data(node.send(V1_HELLO))
    node.receive_data(relay.send(V1_WELCOME))
    node.receive_data(relay.send(OFFER))
    relay.receive_data(node.send(ACCEPT))
    return relay, node


def test_the_highest_common_version_is_chosen() -> None:
    assert choose_version(V1_HELLO.versions) == 1
    assert choose_version(HELLO.versions) == 2
    assert running_v1()[0].version == 1
    assert handshaken()[0].version == 2


def test_a_checkpoint_on_a_version_1_connection_is_a_protocol_error() -> None:
    relay, node = running_v1()
    with pytest.raises(LocalProtocolError, match="Checkpoint is new in protocol version 2"):
        node.send(CHECKPOINT)
    # A peer that sends one anyway (its chunks, then the message) breaks the protocol.
    relay2, node2 = running()
    data = node2.send(CHECKPOINT)
    with pytest.raises(
        RemoteProtocolError,
        match="Checkpoint is new in protocol version 2; this connection speaks version 1",
    ):
        relay.receive_data(data)
    assert relay.state is ConnectionState.ERROR
    assert relay2.receive_data(data) == [CHECKPOINT]  # on version 2 it is a report


def test_resume_fields_only_travel_on_version_2() -> None:
    relay, node = Connection(Role.RELAY), Connection(Role.NODE)
    relay.receive_data(node.send(V1_HELLO))
    node.receive_data(relay.send(V1_WELCOME))
    with pytest.raises(LocalProtocolError, match="an Offer with start_image is new in protocol"):
        relay.send(RESUMED)
    assert relay.open_leases == 0  # the refused offer opened no lease
    data = handshaken()[0].send(RESUMED)
    with pytest.raises(RemoteProtocolError, match="start_image is new in protocol version 2"):
        node.receive_data(data)


def test_a_checkpoint_needs_an_accepted_lease_and_does_not_end_it() -> None:
    relay, node = offered()
    with pytest.raises(LocalProtocolError, match="Checkpoint for lease 'lease-1' before its"):
        node.send(CHECKPOINT)
    relay.receive_data(node.send(ACCEPT))
    assert relay.receive_data(node.send(CHECKPOINT)) == [CHECKPOINT]
    assert relay.open_leases == node.open_leases == 1
    assert relay.receive_data(node.send(RESULT)) == [RESULT]
    with pytest.raises(LocalProtocolError, match="not open"):
        node.send(CHECKPOINT)


def test_a_resumed_offer_round_trips_on_version_2() -> None:
    relay, node = handshaken()
    [received] = node.receive_data(relay.send(RESUMED))
    assert received == RESUMED
    assert isinstance(received, Offer) and received.resumes and received.start_epoch == 4
    [plain] = handshaken()[1].receive_data(handshaken()[0].send(OFFER))
    assert isinstance(plain, Offer) and not plain.resumes and plain.start_image is None
