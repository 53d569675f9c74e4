"""What passes between the node hub and one node connection: the commands a connection
picks up from its outbox (`Offer`, `CancelJob`, live messages), and the `NodeHandle` the
hub keeps for it.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from protocol import LiveMessage
from relay.dispatch import NodeInfo


@dataclass(frozen=True)
class Offer:
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


@dataclass(frozen=True)
class CancelJob:
    """Stop working on a job; its lease is void."""

    job_id: str
    lease: str


NodeCommand = Offer | CancelJob | LiveMessage
"""What a connection sends its node: the hub's job commands, or live messages as they
go on the wire (`relay.live`)."""


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
