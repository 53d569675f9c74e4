"""What passes between the relay and one node connection: the commands a connection picks
up from its outbox (`OfferJob`, `CancelJob`, put there by the job service; live messages,
put there by `relay.live`), and the `NodeHandle` the node registry (`relay.hub`) keeps for it.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol import LiveMessage
from relay.dispatch import NodeInfo
from relay.model import JobRecord


@dataclass(frozen=True)
class OfferJob:
    """A job for a node: its images at the job's size, its method and parameters."""

    job_id: str
    lease: str
    method: str
    epochs: int
    width: int
    height: int
    params: dict[str, Any]
    content_png: bytes
    style_images: tuple[tuple[bytes, float], ...]
    fast_styles: tuple[tuple[str, float], ...]
    start_png: bytes | None = None
    """The job's latest checkpoint, to continue from (`relay.checkpoints`)."""
    start_epoch: int = 0
    """The epoch that checkpoint reached."""


@dataclass(frozen=True)
class CancelJob:
    """Stop working on a job; its lease is void."""

    job_id: str
    lease: str


NodeCommand = OfferJob | CancelJob | LiveMessage
"""What a connection sends its node: the job service's job commands, or live messages as
they go on the wire (`relay.live`)."""


def offer_for(job: JobRecord, lease: str, read: Callable[[str], bytes]) -> OfferJob:
    """The offer of a stored job under `lease`, its images read with `read` (blocking)."""
    images = [s for s in job.styles if not s.id.startswith("fast:")]
    fast = [s for s in job.styles if s.id.startswith("fast:")]
    return OfferJob(
        job_id=job.id,
        lease=lease,
        method=job.method,
        epochs=job.epochs,
        width=job.width,
        height=job.height,
        params=dict(job.params),
        content_png=read(job.content_file),
        style_images=tuple(
            (read(sha), s.weight) for sha, s in zip(job.style_files, images, strict=True)
        ),
        fast_styles=tuple((s.id.removeprefix("fast:"), s.weight) for s in fast),
    )


@dataclass(frozen=True)
class FastStyle:
    """A fast style some connected node serves, for the gallery."""

    name: str
    title: str
    thumbnail: bytes | None


@dataclass(eq=False)
class NodeHandle:
    """One node connection: what it advertised, its outbox of commands, and `dropped`, set
    when the relay gives up on it (silent too long, or replaced by a newer connection): the
    connection's owner then closes it, saying `drop_reason`."""

    info: NodeInfo
    connected_since: float
    last_seen: float
    """Wall time of the node's last word, for people."""
    heard: float
    """The same moment on the service's monotonic timer, for the silence check."""
    outbox: asyncio.Queue[NodeCommand] = field(default_factory=asyncio.Queue)
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    drop_reason: str = ""

    def drop(self, reason: str) -> None:
        """Mark the connection as finished with, for its owner to close."""
        self.drop_reason = reason
        self.dropped.set()

    @property
    def name(self) -> str:
        """The node's name."""
        return self.info.name
