"""Sample messages and conversations shared by the protocol tests, and the checks that every
message constructor applies to its fields."""

from __future__ import annotations

import pytest

from protocol import (
    Accept,
    Bye,
    ByeReason,
    Cancel,
    Capabilities,
    Checkpoint,
    Connection,
    Decline,
    DeclineReason,
    Drain,
    Failure,
    FailureCode,
    Hello,
    Limits,
    LocalProtocolError,
    Message,
    Offer,
    Ping,
    Pong,
    Preview,
    Progress,
    Result,
    Role,
    StyleImage,
    StyleInfo,
    Welcome,
    choose_version,
)

CAPS = Capabilities(
    device_name="NVIDIA RTX 4090",
    device_memory=24 * 2**30,
    methods=("gatys", "fast", "arbitrary"),
    styles=(
        StyleInfo("mosaic", "Mosaic", "fast", thumbnail_jpeg=b"\xff\xd8\xff thumb"),
        StyleInfo("udnie", "Udnie", "fast"),
    ),
    max_epochs=1000,
    max_pixels=4096 * 4096,
    slots=2,
)
HELLO = Hello((1, 2), "node-1", "s3cret", "0.1.0", CAPS)
LIMITS = Limits(
    max_epochs=500, max_pixels=2048 * 2048, max_frame_size=2**20, max_transfer_size=2**26
)
WELCOME = Welcome(2, "session-7", 10.0, LIMITS)
"""Version 2 (checkpoints and resumed offers); `test_protocol_order` also speaks version 1."""


def relay_messages(big: bool) -> list[Message]:
    """What the relay sends after Welcome: offers (with binaries), a ping, a cancel."""
    size = 700_000 if big else 300  # big: several 256 KiB chunks per binary
    content = bytes(range(256)) * (size // 256) + b"tail"
    return [
        WELCOME,
        Ping(1),
        Offer(
            "job-1",
            "lease-1",
            "gatys",
            {"epochs": 20, "content_weight": 1.5, "keep_colors": True, "init": "content"},
            None,
            (StyleImage(content[::-1], 0.75), StyleImage(b"", 0.25)),
            content,
        ),
        Offer("job-2", "lease-2", "fast", {}, "mosaic", (), b"jpeg" * 10),
        Offer("job-3", "lease-3", "arbitrary", {"strength": 1}, None, (), b"x"),
        Cancel("job-3", "lease-3"),
        # Version 2: a job offered again, to continue from its latest checkpoint.
        Offer(
            "job-4",
            "lease-4",
            "gatys",
            {"epochs": 20},
            None,
            (StyleImage(b"style", 1.0),),
            content,
            start_image=content[:1000] + b"start",
            start_epoch=12,
        ),
        Pong(2),
    ]


def node_messages(big: bool) -> list[Message]:
    """What the node sends after Hello, answering `relay_messages`."""
    png = b"\x89PNG" + bytes(range(256)) * (1100 if big else 1)
    return [
        Pong(1),
        Ping(2),
        Accept("job-1", "lease-1"),
        Progress("job-1", "lease-1", 5, 20, {"content": 12.5, "style": 3.25e5}, 1.25),
        Preview("job-1", "lease-1", 5, b"\xff\xd8 preview"),
        Checkpoint("job-1", "lease-1", 5, png[::-1], 64, 48),
        Result.for_png("job-1", "lease-1", png, 64, 48),
        Decline("job-2", "lease-2", DeclineReason.UNKNOWN_STYLE, "no mosaic here"),
        Accept("job-3", "lease-3"),
        Failure("job-3", "lease-3", FailureCode.CANCELLED, "cancelled by the relay"),
        Accept("job-4", "lease-4"),
        Progress("job-4", "lease-4", 13, 20, {"style": 1.5}, 0.5),
        Checkpoint("job-4", "lease-4", 13, png, 64, 48),
        Failure("job-4", "lease-4", FailureCode.CANCELLED),
        Drain(),
        Bye(ByeReason.DRAINED),
    ]


def handshaken() -> tuple[Connection, Connection]:
    """A relay and a node connection, piped through the handshake."""
    relay, node = Connection(Role.RELAY), Connection(Role.NODE)
    assert relay.receive_data(node.send(HELLO)) == [HELLO]
    assert node.receive_data(relay.send(WELCOME)) == [WELCOME]
    return relay, node


def relay_stream(big: bool) -> tuple[Connection, bytes, list[Message]]:
    """A node that has sent Hello, the bytes the relay sends it, and the messages in them."""
    relay, node = Connection(Role.RELAY), Connection(Role.NODE)
    relay.receive_data(node.send(HELLO))
    expected = relay_messages(big)
    data = b"".join(relay.send(m) for m in expected)
    return fresh_node_after_hello(), data, expected


def fresh_node_after_hello() -> Connection:
    """A node connection that has just sent Hello."""
    node = Connection(Role.NODE)
    node.send(HELLO)
    return node


def node_stream(big: bool) -> tuple[Connection, bytes, list[Message]]:
    """A relay that has sent its messages, the bytes the node answers, and their messages."""
    relay, node = handshaken_replay(big)
    expected = node_messages(big)
    data = b"".join(node.send(m) for m in expected)
    return relay, data, expected


def handshaken_replay(big: bool) -> tuple[Connection, Connection]:
    """Relay and node that exchanged Hello and all of `relay_messages(big)`."""
    relay, node = Connection(Role.RELAY), Connection(Role.NODE)
    relay.receive_data(node.send(HELLO))
    for message in relay_messages(big):
        node.receive_data(relay.send(message))
    return relay, node


# --- constructor checks --------------------------------------------------------------


def test_choose_version_picks_the_highest_common_version() -> None:
    assert choose_version([1, 2, 3], [1, 3, 4]) == 3
    assert choose_version([1], [1]) == 1
    assert choose_version([2, 5], [1, 3]) is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: Progress("job", "lease", 3, 2, {}, 1.0),  # epoch beyond max_epochs
        lambda: Progress("job", "lease", -1, 2, {}, 1.0),
        lambda: Progress("job", "lease", 1, 2, {"style": 1}, 1.0),  # int loss
        lambda: Progress("job", "lease", 1, 2, {}, float("nan")),
        lambda: Progress("", "lease", 1, 2, {}, 1.0),
        lambda: Progress("j" * 129, "lease", 1, 2, {}, 1.0),
        lambda: Accept("job", 7),  # type: ignore[arg-type]
        lambda: Ping(True),
        lambda: Ping(-1),
        lambda: Ping(2**63),
        lambda: Hello((), "n", "", "", CAPS),
        lambda: Hello([1], "n", "", "", CAPS),  # type: ignore[arg-type]  # a list, not a tuple
        lambda: Hello((1,), "", "", "", CAPS),
        lambda: Welcome(1, "s", 0.0, LIMITS),
        lambda: Welcome(1, "s", 10, LIMITS),  # int, not float
        lambda: Offer("j", "l", "gatys", {"a": [1]}, None, (), b""),  # type: ignore[dict-item]
        lambda: Offer("j", "l", "gatys", {"a": float("inf")}, None, (), b""),
        lambda: Offer("j", "l", "gatys", {"a": 2**64}, None, (), b""),
        lambda: Offer("j", "l", "gatys", {}, None, (StyleImage(b"", 1.0),) * 9, b""),
        lambda: Offer("j", "l", "gatys", {}, None, (), bytearray(b"x")),  # type: ignore[arg-type]
        lambda: StyleImage(b"", 0.0),
        lambda: StyleInfo("id", "name", "fast", b"x" * (32 * 1024 + 1)),
        lambda: Result("j", "l", b"png", 1, 1, "ABC"),
        lambda: Result("j", "l", b"png", 0, 1, "0" * 64),
        lambda: Offer("j", "l", "gatys", {}, None, (), b"", start_epoch=3),  # and no image
        lambda: Offer("j", "l", "gatys", {}, None, (), b"", b"x", -1),
        lambda: Offer("j", "l", "gatys", {}, None, (), b"", "png", 1),  # type: ignore[arg-type]
        lambda: Checkpoint("j", "l", 1, b"png", 0, 1),
        lambda: Checkpoint("j", "l", -1, b"png", 1, 1),
        lambda: Checkpoint("j", "l", 1, bytearray(b"png"), 1, 1),  # type: ignore[arg-type]
        lambda: Failure("j", "l", "oom", ""),  # type: ignore[arg-type]  # a str, not a FailureCode
        lambda: Bye(ByeReason.SHUTDOWN, "x" * (16 * 1024 + 1)),
        lambda: Limits(1, 1, 1024, 1),  # frame limit below a chunk
        lambda: Capabilities("cpu", 0, ("gatys",), (), 1, 1, 0),  # no slots
    ],
)
def test_constructors_refuse_bad_fields(build: object) -> None:
    with pytest.raises(LocalProtocolError, match="must be"):
        build()  # type: ignore[operator]


def test_error_messages_name_the_message_and_field() -> None:
    with pytest.raises(LocalProtocolError) as caught:
        Progress("job", "lease", 1, 2, {}, -0.5)
    assert str(caught.value) == "Progress.elapsed must be a float >= 0, got float -0.5"


def test_result_for_png_computes_the_digest() -> None:
    result = Result.for_png("j", "l", b"abc", 1, 1)
    assert result.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
