"""Errors of the wire protocol.

    ProtocolError            base of everything this package raises
    ├── LocalProtocolError   our own code misused the protocol (a bug on this side)
    └── RemoteProtocolError  the peer sent something that breaks the protocol

Nothing else escapes: msgpack, struct and lookup errors are turned into
`RemoteProtocolError` with a message that says what was wrong.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error raised by the `protocol` package."""


class LocalProtocolError(ProtocolError):
    """Our own code tried something the protocol forbids (wrong order, wrong role, bad value)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol; the connection cannot continue."""
