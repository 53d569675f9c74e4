"""Closed sets of reason and failure codes; on the wire each travels as its string value."""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Why the relay refused a node's Hello."""

    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_TOKEN = "bad_token"
    NAME_IN_USE = "name_in_use"
    INVALID_HELLO = "invalid_hello"
    RELAY_FULL = "relay_full"
    SHUTTING_DOWN = "shutting_down"


class DeclineReason(StrEnum):
    """Why a node refused an Offer."""

    BUSY = "busy"
    DRAINING = "draining"
    UNSUPPORTED_METHOD = "unsupported_method"
    UNKNOWN_STYLE = "unknown_style"
    TOO_LARGE = "too_large"
    INVALID_PARAMS = "invalid_params"
    INVALID_INPUT = "invalid_input"
    CANCELLED = "cancelled"


class FailureCode(StrEnum):
    """Why an accepted job ended without a Result."""

    CANCELLED = "cancelled"
    OUT_OF_MEMORY = "out_of_memory"
    INVALID_INPUT = "invalid_input"
    TIMEOUT = "timeout"
    INTERNAL = "internal"


class ByeReason(StrEnum):
    """Why a peer is closing the connection."""

    SHUTDOWN = "shutdown"
    DRAINED = "drained"
    PROTOCOL_ERROR = "protocol_error"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    REPLACED = "replaced"
