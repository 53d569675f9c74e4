"""Fuzzing: arbitrary bodies of every frame type and corrupted sample streams, fed to both
sides. Whatever comes in, only messages or a ProtocolError may come out."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protocol_malformed import accepted, frame
from test_protocol_samples import HELLO, node_messages, relay_messages

from protocol import Connection, ProtocolError, Role

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip
_names = st.sampled_from(
    ["hello", "welcome", "reject", "offer", "accept", "decline", "progress", "preview",
     "result", "failure", "cancel", "ping", "pong", "drain", "bye", "chunk", "chunk_end"]
)  # fmt: skip
_keys = st.sampled_from(
    ["job_id", "lease_id", "epoch", "max_epochs", "losses", "elapsed", "nonce", "reason",
     "message", "transfer", "seq", "data", "size", "sha256", "png", "content", "versions"]
)  # fmt: skip


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_names, fields=st.dictionaries(_keys, _values, max_size=8))
def test_any_body_gives_messages_or_a_protocol_error(name: str, fields: dict[str, Any]) -> None:
    relay, node = accepted()
    for conn in (relay, node):
        with contextlib.suppress(ProtocolError):
            conn.receive_data(frame({"type": name, **fields}))


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_corrupted_streams_give_messages_or_a_protocol_error(data: st.DataObject) -> None:
    stream = b"".join(node_stream_bytes())
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(stream) - 1),
                                         st.integers(0, 255)), min_size=1, max_size=4))  # fmt: skip
    corrupted = bytearray(stream)
    for index, value in flips:
        corrupted[index] = value
    relay, _ = relay_after_offers()
    with contextlib.suppress(ProtocolError):
        relay.receive_data(bytes(corrupted))
        relay.receive_data(b"")


def relay_after_offers() -> tuple[Connection, Connection]:
    """Relay and node after the node's Hello and the relay's sample messages."""
    relay, node = Connection(Role.RELAY), Connection(Role.NODE)
    relay.receive_data(node.send(HELLO))
    for message in relay_messages(False):
        node.receive_data(relay.send(message))
    return relay, node


def node_stream_bytes() -> list[bytes]:
    """The frames of the node's sample answers."""
    _, node = relay_after_offers()
    return [node.send(message) for message in node_messages(False)]
