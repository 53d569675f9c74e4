"""The handshake messages of protocol version 1 and the records they carry.

Like every message (see `messages.py`), a handshake message that exists is valid: its
`__post_init__` checks every field and raises `LocalProtocolError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import checks
from .codes import RejectReason
from .limits import (
    MAX_ITEMS,
    MAX_NAME_LEN,
    MAX_TEXT_LEN,
    MAX_THUMBNAIL_SIZE,
    MAX_TOKEN_LEN,
    MIN_MAX_FRAME_SIZE,
)


@dataclass(frozen=True, slots=True)
class StyleInfo:
    """A built-in or trained style a node serves, with an optional small JPEG thumbnail."""

    id: str
    name: str
    method: str
    thumbnail_jpeg: bytes | None = None

    def __post_init__(self) -> None:
        checks.ident(self, "id", self.id)
        checks.text(self, "name", self.name, MAX_NAME_LEN)
        checks.ident(self, "method", self.method)
        if self.thumbnail_jpeg is not None:
            checks.blob(self, "thumbnail_jpeg", self.thumbnail_jpeg, MAX_THUMBNAIL_SIZE)


GATYS_START_EPOCHS = 2.0
"""A Gatys job spends about this many epochs' time before its first epoch (the style's and
the content's targets, the first allocations, the PNG at the end; measured on a CPU): a
Gatys job is `epochs + GATYS_START_EPOCHS` units of a `Pace`. Here because the node that
measures a pace and the relay that uses it must count the same units."""


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast a node runs one method, measured on its device.

    A job of this method takes about `seconds + seconds_per_mp * megapixels` per unit of
    work: per epoch (plus `GATYS_START_EPOCHS`) for `gatys`, per job for one-pass methods.
    """

    method: str
    seconds: float
    seconds_per_mp: float

    def __post_init__(self) -> None:
        checks.ident(self, "method", self.method)
        checks.real(self, "seconds", self.seconds)
        checks.real(self, "seconds_per_mp", self.seconds_per_mp)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One device of a node that drives several: its name, memory and job slots."""

    name: str
    memory: int
    """Bytes (0 if unknown)."""
    slots: int

    def __post_init__(self) -> None:
        checks.text(self, "name", self.name, MAX_NAME_LEN)
        checks.uint(self, "memory", self.memory)
        checks.uint(self, "slots", self.slots, lo=1, hi=MAX_ITEMS)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a node can do: its device, methods, styles, per-job limits and, optionally,
    its measured pace per method (empty from nodes that do not measure it) and its
    devices one by one (empty from nodes that do not list them; `device_name`,
    `device_memory` and `slots` then describe the whole node)."""

    device_name: str
    device_memory: int
    methods: tuple[str, ...]
    styles: tuple[StyleInfo, ...]
    max_epochs: int
    max_pixels: int
    slots: int
    pace: tuple[Pace, ...] = ()
    devices: tuple[DeviceInfo, ...] = ()
    live: bool = False
    """Whether it takes live sessions (protocol version 3; its owner may refuse them)."""

    def __post_init__(self) -> None:
        if type(self.live) is not bool:
            raise checks.bad(self, "live", "a bool", self.live)
        checks.text(self, "device_name", self.device_name, MAX_NAME_LEN)
        checks.uint(self, "device_memory", self.device_memory)
        checks.items(self, "methods", self.methods, str)
        for method in self.methods:
            checks.ident(self, "methods", method)
        checks.items(self, "styles", self.styles, StyleInfo)
        checks.uint(self, "max_epochs", self.max_epochs, lo=1)
        checks.uint(self, "max_pixels", self.max_pixels, lo=1)
        checks.uint(self, "slots", self.slots, lo=1, hi=MAX_ITEMS)
        checks.items(self, "pace", self.pace, Pace)
        checks.items(self, "devices", self.devices, DeviceInfo)


@dataclass(frozen=True, slots=True)
class Limits:
    """The relay's limits, sent in Welcome: per-job bounds and what its receiver accepts."""

    max_epochs: int
    max_pixels: int
    max_frame_size: int
    max_transfer_size: int

    def __post_init__(self) -> None:
        checks.uint(self, "max_epochs", self.max_epochs, lo=1)
        checks.uint(self, "max_pixels", self.max_pixels, lo=1)
        checks.uint(self, "max_frame_size", self.max_frame_size, lo=MIN_MAX_FRAME_SIZE)
        checks.uint(self, "max_transfer_size", self.max_transfer_size, lo=1)


@dataclass(frozen=True, slots=True)
class Hello:
    """Node -> relay, first message: who the node is and what it can do."""

    versions: tuple[int, ...]
    node_name: str
    token: str
    software_version: str
    capabilities: Capabilities

    def __post_init__(self) -> None:
        checks.items(self, "versions", self.versions, int)
        if not self.versions:
            raise checks.bad(self, "versions", "a non-empty tuple", self.versions)
        for version in self.versions:
            checks.uint(self, "versions", version, lo=1, hi=65535)
        checks.text(self, "node_name", self.node_name, MAX_NAME_LEN)
        checks.text(self, "token", self.token, MAX_TOKEN_LEN, empty=True)
        checks.text(self, "software_version", self.software_version, MAX_NAME_LEN, empty=True)
        if type(self.capabilities) is not Capabilities:
            raise checks.bad(self, "capabilities", "Capabilities", self.capabilities)


@dataclass(frozen=True, slots=True)
class Welcome:
    """Relay -> node: the handshake succeeded; chosen version, session and limits."""

    version: int
    session_id: str
    heartbeat_interval: float
    limits: Limits

    def __post_init__(self) -> None:
        checks.uint(self, "version", self.version, lo=1, hi=65535)
        checks.ident(self, "session_id", self.session_id)
        checks.real(self, "heartbeat_interval", self.heartbeat_interval, positive=True)
        if type(self.limits) is not Limits:
            raise checks.bad(self, "limits", "Limits", self.limits)


@dataclass(frozen=True, slots=True)
class Reject:
    """Relay -> node: the handshake failed; the relay closes the connection."""

    reason: RejectReason
    message: str = ""

    def __post_init__(self) -> None:
        checks.code(self, "reason", self.reason, RejectReason)
        checks.text(self, "message", self.message, MAX_TEXT_LEN, empty=True)
