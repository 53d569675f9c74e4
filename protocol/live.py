"""The live messages of protocol version 3: a camera painted frame by frame under a live
lease (docs/protocol.md, "Live sessions").

    relay -> node   live_open(lease, side, style)    node -> relay   live_ready(lease)
    relay -> node   live_frame(lease, seq, image)    node -> relay   live_painted(lease, seq, jpeg)
    relay -> node   live_restyle(lease, style)       node -> relay   live_missed(lease, seq, why)
    either side     live_end(lease, message)

Frames are small (a JPEG or WebP of at most `MAX_LIVE_SIDE` px a side), so their bytes
travel inline in the message, not as chunked transfers. `LiveLeases` keeps the live leases
of one connection for the state machine: what our side sends must name an open lease;
what the peer sends may also name one that ended in flight (it crossed our `live_end`).
Like every message, a live message that exists is valid.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import checks
from .errors import ProtocolError
from .limits import MAX_TEXT_LEN

LIVE_VERSION = 3
"""The protocol version that brought live sessions; a lower connection never sees them."""

MAX_LIVE_IMAGE = 512 * 1024
"""Largest frame, painted frame or style image of a live message, in bytes (inline)."""

MAX_LIVE_SIDE = 2048
"""Longest side any live frame may have on the wire (relays cap lower: `--live-max-side`)."""

LIVE_METHODS = ("fast", "arbitrary")
"""The one-pass methods a live session may use."""

_RECENT = 256  # ended leases remembered, so a message that crossed the end is not an error


@dataclass(frozen=True, slots=True)
class LiveStyle:
    """What a live session paints with: a fast style id, or an image for `arbitrary`."""

    method: str
    style_id: str | None = None
    image: bytes | None = None

    def __post_init__(self) -> None:
        if self.method not in LIVE_METHODS:
            raise checks.bad(self, "method", f"one of {LIVE_METHODS}", self.method)
        if self.method == "fast":
            checks.ident(self, "style_id", self.style_id)
            if self.image is not None:
                raise checks.bad(self, "image", "None for the fast method", self.image)
        else:
            if self.style_id is not None:
                raise checks.bad(self, "style_id", "None for the arbitrary method", self.style_id)
            checks.blob(self, "image", self.image, MAX_LIVE_IMAGE)


def _lease(owner: object, lease_id: object) -> None:
    checks.ident(owner, "lease_id", lease_id)


def _style(owner: object, style: object) -> None:
    if type(style) is not LiveStyle:
        raise checks.bad(owner, "style", "LiveStyle", style)


@dataclass(frozen=True, slots=True)
class LiveOpen:
    """Relay -> node: open a live lease of one slot, frames at most `side` px a side."""

    lease_id: str
    side: int
    style: LiveStyle

    def __post_init__(self) -> None:
        _lease(self, self.lease_id)
        checks.uint(self, "side", self.side, lo=1, hi=MAX_LIVE_SIDE)
        _style(self, self.style)


@dataclass(frozen=True, slots=True)
class LiveReady:
    """Node -> relay: the live lease is open and the style loaded; send frames."""

    lease_id: str

    def __post_init__(self) -> None:
        _lease(self, self.lease_id)


@dataclass(frozen=True, slots=True)
class LiveRestyle:
    """Relay -> node: paint the following frames with another style."""

    lease_id: str
    style: LiveStyle

    def __post_init__(self) -> None:
        _lease(self, self.lease_id)
        _style(self, self.style)


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """Relay -> node: one camera frame (JPEG or WebP); the node answers it exactly once."""

    lease_id: str
    seq: int
    image: bytes

    def __post_init__(self) -> None:
        _lease(self, self.lease_id)
        checks.uint(self, "seq", self.seq)
        checks.blob(self, "image", self.image, MAX_LIVE_IMAGE)


@dataclass(frozen=True, slots=True)
class LivePainted:
    """Node -> relay: frame `seq` painted, as a JPEG; `elapsed`: seconds it took the node."""

    lease_id: str
    seq: int
    jpeg: bytes
    elapsed: float

    def __post_init__(self) -> None:
        _lease(self, self.lease_id)
        checks.uint(self, "seq", self.seq)
        checks.blob(self, "jpeg", self.jpeg, MAX_LIVE_IMAGE)
        checks.real(self, "elapsed", self.elapsed)


@dataclass(frozen=True, slots=True)
class LiveMissed:
    """Node -> relay: frame `seq` could not be painted (an unreadable image, say)."""

    lease_id: str
    seq: int
    message: str = ""

    def __post_init__(self) -> None:
        _lease(self, self.lease_id)
        checks.uint(self, "seq", self.seq)
        checks.text(self, "message", self.message, MAX_TEXT_LEN, empty=True)


@dataclass(frozen=True, slots=True)
class LiveEnd:
    """Either side: the live lease is over (the relay closes it, or the node refuses or
    gives it up, saying why); nothing more is sent for it."""

    lease_id: str
    message: str = ""

    def __post_init__(self) -> None:
        _lease(self, self.lease_id)
        checks.text(self, "message", self.message, MAX_TEXT_LEN, empty=True)


LiveMessage = LiveOpen | LiveReady | LiveRestyle | LiveFrame | LivePainted | LiveMissed | LiveEnd
"""Any message of a live session."""

LIVE_KINDS = (LiveOpen, LiveReady, LiveRestyle, LiveFrame, LivePainted, LiveMissed, LiveEnd)
"""The live message types (a tuple, for `isinstance`)."""


class LiveLeases:
    """The open live leases of one connection, for the state machine."""

    def __init__(self) -> None:
        self._open: set[str] = set()
        self._ended: OrderedDict[str, None] = OrderedDict()

    @property
    def open(self) -> int:
        """How many live leases are open."""
        return len(self._open)

    def apply(self, message: LiveMessage, ours: bool, error: type[ProtocolError]) -> None:
        """Check `message` (sent by us if `ours`) and apply it; raise `error` if illegal.
        The state machine has already checked that the connection speaks `LIVE_VERSION`
        (the rules' `since`)."""
        name = type(message).__name__
        lease = message.lease_id
        if type(message) is LiveOpen:
            if lease in self._open or lease in self._ended:
                raise error(f"LiveOpen reuses live lease {lease!r}")
            self._open.add(lease)
            return
        if lease not in self._open:
            if not ours and lease in self._ended:
                return  # it crossed our live_end in flight: the application ignores it
            raise error(f"{name} names live lease {lease!r}, which is not open")
        if type(message) is LiveEnd:
            self._open.discard(lease)
            self._ended[lease] = None
            while len(self._ended) > _RECENT:
                self._ended.popitem(last=False)


# ---- wire shapes (docs/protocol.md, "Live sessions") ---------------------------------------


def _style_body(s: LiveStyle) -> dict[str, Any]:
    return {"method": s.method, "style_id": s.style_id, "image": s.image}


def _style_of(body: object) -> LiveStyle:
    if type(body) is not dict:
        raise TypeError("style must be a map")
    return LiveStyle(body["method"], body.get("style_id"), body.get("image"))


def _float(value: Any) -> Any:
    return float(value) if type(value) is int else value


# fmt: off
ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    LiveOpen: lambda m: {"type": "live_open", "lease_id": m.lease_id, "side": m.side,
                         "style": _style_body(m.style)},
    LiveReady: lambda m: {"type": "live_ready", "lease_id": m.lease_id},
    LiveRestyle: lambda m: {"type": "live_restyle", "lease_id": m.lease_id,
                            "style": _style_body(m.style)},
    LiveFrame: lambda m: {"type": "live_frame", "lease_id": m.lease_id, "seq": m.seq,
                          "image": m.image},
    LivePainted: lambda m: {"type": "live_painted", "lease_id": m.lease_id, "seq": m.seq,
                            "jpeg": m.jpeg, "elapsed": m.elapsed},
    LiveMissed: lambda m: {"type": "live_missed", "lease_id": m.lease_id, "seq": m.seq,
                           "message": m.message},
    LiveEnd: lambda m: {"type": "live_end", "lease_id": m.lease_id, "message": m.message},
}
"""Each live message's wire map; its bytes go inline as msgpack bin."""

DECODERS: dict[str, Callable[[dict[str, Any]], LiveMessage]] = {
    "live_open": lambda b: LiveOpen(b["lease_id"], b["side"], _style_of(b["style"])),
    "live_ready": lambda b: LiveReady(b["lease_id"]),
    "live_restyle": lambda b: LiveRestyle(b["lease_id"], _style_of(b["style"])),
    "live_frame": lambda b: LiveFrame(b["lease_id"], b["seq"], b["image"]),
    "live_painted": lambda b: LivePainted(b["lease_id"], b["seq"], b["jpeg"],
                                          _float(b["elapsed"])),
    "live_missed": lambda b: LiveMissed(b["lease_id"], b["seq"], b["message"]),
    "live_end": lambda b: LiveEnd(b["lease_id"], b["message"]),
}
"""Each live wire map's message (field checks are the constructors')."""
# fmt: on


def without_binaries(
    encode: Callable[[Any], dict[str, Any]],
) -> Callable[[Any, Callable[[bytes], tuple[int, str]]], dict[str, Any]]:
    """A live encoder in the codec's shape: its bytes go inline, never through `put`."""
    return lambda message, put: encode(message)


def without_transfers(
    decode: Callable[[dict[str, Any]], LiveMessage],
) -> Callable[[dict[str, Any], Callable[[object], Any]], LiveMessage]:
    """A live decoder in the codec's shape: it claims no transfers."""
    return lambda body, take: decode(body)
