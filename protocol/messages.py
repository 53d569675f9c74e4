"""The messages of the protocol (versions 1 and 2), one frozen dataclass each (the
handshake's are in `handshake.py`).

A message object that exists is valid: `__post_init__` checks every field (types and the
limits of `limits.py`) and raises `LocalProtocolError`. The decoder builds messages through
the same constructors, so a peer's bad field becomes a `RemoteProtocolError` there.
Binary fields are plain `bytes` here; how they travel (chunked transfers) is the
connection's business. What is new in version 2 (`Checkpoint`, the resume fields of `Offer`)
is legal only on a connection that chose version 2 or later: the state machine checks that.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from . import checks
from .codes import ByeReason, DeclineReason, FailureCode
from .handshake import Hello, Reject, Welcome
from .limits import (
    MAX_ITEMS,
    MAX_STYLE_IMAGES,
    MAX_TEXT_LEN,
)
from .live import LiveMessage

Scalar = bool | int | float | str
"""The value types allowed in `Offer.params`."""

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class StyleImage:
    """One style image of an Offer and its blending weight."""

    data: bytes
    weight: float = 1.0

    def __post_init__(self) -> None:
        checks.blob(self, "data", self.data)
        if not checks.is_weight(self.weight):
            raise checks.bad(self, "weight", "a positive float", self.weight)


@dataclass(frozen=True, slots=True)
class Offer:
    """Relay -> node: a job under a lease; the node answers Accept or Decline."""

    job_id: str
    lease_id: str
    method: str
    params: dict[str, Scalar]
    style_id: str | None
    style_images: tuple[StyleImage, ...]
    content: bytes
    start_image: bytes | None = None
    """Version 2: the job's latest checkpoint (a PNG at the output size) to continue from,
    or None to start afresh."""
    start_epoch: int = 0
    """Version 2: the epoch `start_image` reached; 0 when there is none."""

    def __post_init__(self) -> None:
        checks.job(self, self.job_id, self.lease_id)
        checks.ident(self, "method", self.method)
        if type(self.params) is not dict or len(self.params) > MAX_ITEMS:
            raise checks.bad(self, "params", f"a dict of at most {MAX_ITEMS} entries", self.params)
        for key, value in self.params.items():
            checks.ident(self, "params key", key)
            _check_scalar(self, key, value)
        if self.style_id is not None:
            checks.ident(self, "style_id", self.style_id)
        checks.items(self, "style_images", self.style_images, StyleImage, MAX_STYLE_IMAGES)
        checks.blob(self, "content", self.content)
        if self.start_image is None:
            checks.uint(self, "start_epoch", self.start_epoch, hi=0)
        else:
            checks.blob(self, "start_image", self.start_image)
            checks.uint(self, "start_epoch", self.start_epoch)

    @property
    def resumes(self) -> bool:
        """Whether the offer continues a job from a checkpoint (a version-2 field)."""
        return self.start_image is not None


def _check_scalar(owner: Offer, key: str, value: object) -> None:
    if not checks.is_param(value):
        raise checks.bad(owner, f"params[{key!r}]", "a bool, int64, finite float or string", value)


@dataclass(frozen=True, slots=True)
class Accept:
    """Node -> relay: the node takes the offered job."""

    job_id: str
    lease_id: str

    def __post_init__(self) -> None:
        checks.job(self, self.job_id, self.lease_id)


@dataclass(frozen=True, slots=True)
class Decline:
    """Node -> relay: the node refuses the offered job (or gives back a cancelled offer)."""

    job_id: str
    lease_id: str
    reason: DeclineReason
    message: str = ""

    def __post_init__(self) -> None:
        checks.job(self, self.job_id, self.lease_id)
        checks.code(self, "reason", self.reason, DeclineReason)
        checks.text(self, "message", self.message, MAX_TEXT_LEN, empty=True)


@dataclass(frozen=True, slots=True)
class Progress:
    """Node -> relay: an accepted job reached `epoch` of `max_epochs`."""

    job_id: str
    lease_id: str
    epoch: int
    max_epochs: int
    losses: dict[str, float]
    elapsed: float

    def __post_init__(self) -> None:
        checks.job(self, self.job_id, self.lease_id)
        checks.uint(self, "max_epochs", self.max_epochs, lo=1)
        checks.uint(self, "epoch", self.epoch, hi=self.max_epochs)
        if type(self.losses) is not dict or len(self.losses) > MAX_ITEMS:
            raise checks.bad(self, "losses", f"a dict of at most {MAX_ITEMS} entries", self.losses)
        for key, value in self.losses.items():
            if type(key) is not str or type(value) is not float:
                raise checks.bad(self, "losses", "a dict of str to float", (key, value))
        checks.real(self, "elapsed", self.elapsed)


@dataclass(frozen=True, slots=True)
class Preview:
    """Node -> relay: a small JPEG of the image at `epoch`."""

    job_id: str
    lease_id: str
    epoch: int
    jpeg: bytes

    def __post_init__(self) -> None:
        checks.job(self, self.job_id, self.lease_id)
        checks.uint(self, "epoch", self.epoch)
        checks.blob(self, "jpeg", self.jpeg)


@dataclass(frozen=True, slots=True)
class Result:
    """Node -> relay: the finished image as PNG; ends the lease."""

    job_id: str
    lease_id: str
    png: bytes
    width: int
    height: int
    sha256: str

    def __post_init__(self) -> None:
        checks.job(self, self.job_id, self.lease_id)
        checks.blob(self, "png", self.png)
        checks.uint(self, "width", self.width, lo=1)
        checks.uint(self, "height", self.height, lo=1)
        if type(self.sha256) is not str or len(self.sha256) != 64 or not set(self.sha256) <= _HEX:
            raise checks.bad(self, "sha256", "64 lowercase hex digits", self.sha256)

    @classmethod
    def for_png(cls, job_id: str, lease_id: str, png: bytes, width: int, height: int) -> Result:
        """Build a Result, computing the PNG's sha256."""
        return cls(job_id, lease_id, png, width, height, hashlib.sha256(png).hexdigest())


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Node -> relay (version 2): the picture so far, as a PNG at the job's full output
    size, after `epoch` epochs; the relay keeps the latest one to resume the job from or
    to show if it ends without a result. Does not end the lease."""

    job_id: str
    lease_id: str
    epoch: int
    png: bytes
    width: int
    height: int

    def __post_init__(self) -> None:
        checks.job(self, self.job_id, self.lease_id)
        checks.uint(self, "epoch", self.epoch)
        checks.blob(self, "png", self.png)
        checks.uint(self, "width", self.width, lo=1)
        checks.uint(self, "height", self.height, lo=1)


@dataclass(frozen=True, slots=True)
class Failure:
    """Node -> relay: an accepted job ended without a result; ends the lease."""

    job_id: str
    lease_id: str
    code: FailureCode
    message: str = ""

    def __post_init__(self) -> None:
        checks.job(self, self.job_id, self.lease_id)
        checks.code(self, "code", self.code, FailureCode)
        checks.text(self, "message", self.message, MAX_TEXT_LEN, empty=True)


@dataclass(frozen=True, slots=True)
class Cancel:
    """Relay -> node: stop the job; the node answers Decline, Failure or its Result."""

    job_id: str
    lease_id: str

    def __post_init__(self) -> None:
        checks.job(self, self.job_id, self.lease_id)


@dataclass(frozen=True, slots=True)
class Ping:
    """Either side: are you there? The peer answers Pong with the same nonce."""

    nonce: int

    def __post_init__(self) -> None:
        checks.uint(self, "nonce", self.nonce)


@dataclass(frozen=True, slots=True)
class Pong:
    """Either side: the answer to Ping, echoing its nonce."""

    nonce: int

    def __post_init__(self) -> None:
        checks.uint(self, "nonce", self.nonce)


@dataclass(frozen=True, slots=True)
class Drain:
    """Node -> relay: the node is leaving; no new offers, running jobs may finish."""


@dataclass(frozen=True, slots=True)
class Bye:
    """Either side: the sender closes the connection now and sends nothing more."""

    reason: ByeReason
    message: str = ""

    def __post_init__(self) -> None:
        checks.code(self, "reason", self.reason, ByeReason)
        checks.text(self, "message", self.message, MAX_TEXT_LEN, empty=True)


Message = (
    Hello
    | Welcome
    | Reject
    | Offer
    | Accept
    | Decline
    | Progress
    | Preview
    | Result
    | Checkpoint
    | Failure
    | Cancel
    | Ping
    | Pong
    | Drain
    | Bye
    | LiveMessage
)
"""Any message of the protocol (the live ones need version 3: `live.py`)."""
