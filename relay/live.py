"""Live sessions: a camera painted frame by frame on one slot of one node.

    sessions = LiveSessions(service)                  # one per relay, owned by the JobService
    session = sessions.open(client, side, style, to_page)   # LiveRefused if it cannot start
    sessions.frame(session, seq, jpeg)                # from the page
    sessions.painted(handle, message)                 # from the node (relay.nodelink)
    sessions.close(session, "stopped")

A session leases one slot of one node that spoke protocol version 3 and takes live work
(`Capabilities.live`), while live sessions there hold less than `--live-share` of its slots
(`Scheduler.hold_live`), so queued jobs keep the rest. At most `IN_FLIGHT` frames are at
the node; a newer frame waits in a single place beside them, and a frame that arrives
while one waits pushes the older one out (latency over completeness: the page is told it
was dropped). Frames are checked before they travel: JPEG or WebP, at most the session's
side, at most `MAX_FPS` a second; style switches reach the node at most every
`RESTYLE_EVERY` s (the latest wins). The round trip to the node steers the frame size the
page is asked for (`Steering`). A session whose node leaves, drains, or stops answering
with paintings (`READY_WITHIN`, `PAINT_WITHIN`, `MAX_NODE_MISSES`) moves to another free
one, or ends with a message; painted frames are checked (a JPEG within the side) before
they reach the page. Whatever reaches the page goes through `to_page` (JSON dicts, or
painted frames as bytes: `painted_bytes`).
"""

from __future__ import annotations

import io
import logging
import secrets
import statistics
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from protocol import (
    LiveEnd,
    LiveFrame,
    LiveMissed,
    LiveOpen,
    LivePainted,
    LiveReady,
    LiveRestyle,
    LiveStyle,
)
from protocol.live import MAX_LIVE_IMAGE
from relay.config import Config
from relay.dispatch import Action
from relay.handles import NodeHandle
from relay.scheduler import Scheduler

log = logging.getLogger(__name__)

IN_FLIGHT = 2
"""Most frames of one session at its node at once."""
MAX_FPS = 30.0
"""Most frames a second a page may send; faster ones are dropped (a burst of `BURST`)."""
BURST = 10
MIN_SIDE = 96
"""The floor the frame size may be lowered to."""
SLOW_ROUND_TRIP = 0.45
"""A median round trip above this (seconds) lowers the frame size..."""
FAST_ROUND_TRIP = 0.18
"""...and one below this raises it again, up to the session's side."""
STEER_EVERY = 8
"""Round trips measured between two decisions on the frame size."""
RESTYLE_EVERY = 0.5
"""Least seconds between two style switches sent to the node; a page's switches in between
are folded into the last one, sent when the gap has passed (each may carry a 512 KiB
image, and the node prepares every one)."""
READY_WITHIN = 15.0
"""Seconds a node has to answer a live lease with `LiveReady`; after that the session
moves to another node, or ends with `node_silent`."""
PAINT_WITHIN = 15.0
"""Seconds a node has to answer a frame; after that the session moves on as above (a node
that stopped painting would otherwise hold the page, frozen, and the slot until the end)."""
MAX_NODE_MISSES = 10
"""Frames in a row a node answers without a usable painting, after which the session moves
on as above (a broken node, or one that answers only to hold the session)."""
MAX_BAD_FRAMES = 20
"""Unusable frames in a row after which a session ends (a broken or hostile page)."""
SOCKETS_PER_CLIENT = 2
"""Most live sockets one client may hold open: it may run one session, and a page being
reloaded briefly holds two; each socket may keep an own style image of up to 512 KiB."""
FRAME_TAG = 1
"""First byte of a binary WebSocket message carrying a frame (either way)."""
STYLE_TAG = 2
"""First byte of a binary WebSocket message carrying an own style image (page -> relay)."""
_SEQ = struct.Struct(">BI")

ToPage = Callable[[dict[str, Any] | bytes], None]


class LiveRefused(Exception):
    """A live session cannot start or go on; `reason` is a code, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def painted_bytes(seq: int, jpeg: bytes) -> bytes:
    """The binary WebSocket message of a painted frame: tag, sequence number, JPEG."""
    return _SEQ.pack(FRAME_TAG, seq) + jpeg


def split_frame(data: bytes) -> tuple[int, bytes]:
    """A page's binary frame message as (seq, image); ValueError if it is not one."""
    if len(data) < _SEQ.size or data[0] != FRAME_TAG:
        raise ValueError("a frame is the byte 1, a 4-byte sequence number, then the image")
    return _SEQ.unpack_from(data)[1], data[_SEQ.size :]


def check_image(data: bytes, side: int, formats: tuple[str, ...] = ("JPEG", "WEBP")) -> None:
    """ValueError unless `data` is an image of `formats` at most `side` px a side (its
    header only: the node decodes it, within the same bounds)."""
    if len(data) > MAX_LIVE_IMAGE:
        raise ValueError(f"{len(data):,} bytes, over {MAX_LIVE_IMAGE:,}")
    try:
        with Image.open(io.BytesIO(data), formats=formats) as img:
            width, height = img.size
    except Exception:  # anything Pillow may raise on hostile bytes
        raise ValueError(f"not a {' or '.join(formats)} image") from None
    if max(width, height) > side or min(width, height) < 16:
        raise ValueError(f"{width}x{height}: the session takes 16 to {side} px a side")


@dataclass
class Steering:
    """Frame size from measured round trips: lower when slow, raise again when fast."""

    side: int
    """The most the session allows."""
    target: int = 0
    samples: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.target = self.target or self.side

    def measured(self, round_trip: float) -> int | None:
        """Note one round trip; the new target side when it changes, else None."""
        self.samples.append(round_trip)
        if len(self.samples) < STEER_EVERY:
            return None
        median = statistics.median(self.samples)
        self.samples.clear()
        old = self.target
        if median > SLOW_ROUND_TRIP:
            self.target = max(min(MIN_SIDE, self.side), round(self.target * 0.75))
        elif median < FAST_ROUND_TRIP:
            self.target = min(self.side, round(self.target / 0.75))
        return self.target if self.target != old else None


@dataclass(eq=False)
class LiveSession:
    """One page's live session."""

    id: str
    client: str
    side: int
    style: LiveStyle
    to_page: ToPage
    steering: Steering
    node: NodeHandle | None = None
    lease: str | None = None
    ready: bool = False
    offered_at: float = 0.0
    """When the current lease was offered (the relay's timer)."""
    passed_over: set[str] = field(default_factory=set)
    """Nodes that ended, refused or left unanswered a lease of this session: not asked
    again."""
    restyled_at: float = float("-inf")
    """When the node was last sent a style switch."""
    restyle_due: bool = False
    """The page switched the style since then: `style` is still to go to the node."""
    ended: bool = False
    in_flight: dict[int, float] = field(default_factory=dict)
    waiting: tuple[int, bytes] | None = None
    tokens: float = float(BURST)
    last_token: float = 0.0
    bad_in_a_row: int = 0
    misses_in_a_row: int = 0
    """Frames its node answered in a row without a usable painting."""
    painted: int = 0
    dropped: int = 0


class LiveHost(Protocol):
    """What live sessions need of the job service (`relay.jobs.JobService`, which owns
    them; a protocol, so this module does not import it): its settings, the scheduler that
    hands out slots, its clock, and a way to carry out the scheduler's actions."""

    @property
    def config(self) -> Config:
        """The relay's settings (`--live-share`, `--live-max-side`, ...)."""

    @property
    def scheduler(self) -> Scheduler:
        """Who holds every node's slots."""

    @property
    def timer(self) -> Callable[[], float]:
        """Monotonic seconds."""

    def apply(self, actions: Iterable[Action]) -> None:
        """Carry out what the scheduler decided (offers, cancels, ...)."""


class LiveSessions:
    """Every live session of the relay and the live-capable nodes they may lease."""

    def __init__(self, service: LiveHost) -> None:
        self._service = service
        self._nodes: dict[str, NodeHandle] = {}
        self._sessions: dict[str, LiveSession] = {}
        self._by_client: dict[str, LiveSession] = {}
        self._by_lease: dict[str, LiveSession] = {}
        self._sockets: dict[str, int] = {}

    # ---- nodes -------------------------------------------------------------------------

    def node_up(self, handle: NodeHandle, live: bool) -> None:
        """A node connected; `live`: it spoke version 3 and takes live sessions."""
        if live:
            self._nodes[handle.name] = handle

    def node_down(self, handle: NodeHandle) -> None:
        """A node is gone: its sessions move to another node, or end with a message."""
        if self._nodes.get(handle.name) is handle:
            del self._nodes[handle.name]
        for session in [s for s in self._sessions.values() if s.node is handle]:
            self._move(session, handle, "the node left", told=True, lost=True)

    def node_draining(self, handle: NodeHandle) -> None:
        """A node is leaving: its sessions move to other free nodes now; one that finds
        none stays where it is until the node goes."""
        for session in [s for s in self._sessions.values() if s.node is handle]:
            self._move(session, handle, "the node is leaving", stay=True)

    def check_unanswered(self) -> None:
        """Periodic: a lease its node left unanswered for `READY_WITHIN` s, or a frame it
        left unanswered for `PAINT_WITHIN` s, is given up; the session moves to another
        node, or ends."""
        now = self._service.timer()
        for session in list(self._sessions.values()):
            node = session.node
            if node is None:
                continue
            if not session.ready and now - session.offered_at > READY_WITHIN:
                self._move(session, node, f"no answer within {READY_WITHIN:g} s")
            elif session.in_flight and now - min(session.in_flight.values()) > PAINT_WITHIN:
                self._move(session, node, f"no frame painted within {PAINT_WITHIN:g} s")

    @property
    def sessions(self) -> int:
        """How many live sessions are open."""
        return len(self._sessions)

    # ---- from the page ---------------------------------------------------------------

    def socket_opened(self, client: str) -> bool:
        """Count a live socket of `client`; False (uncounted) if it holds
        `SOCKETS_PER_CLIENT` already."""
        held = self._sockets.get(client, 0)
        if held >= SOCKETS_PER_CLIENT:
            return False
        self._sockets[client] = held + 1
        return True

    def socket_closed(self, client: str) -> None:
        """A live socket `socket_opened` counted has closed."""
        held = self._sockets.pop(client, 0) - 1
        if held > 0:
            self._sockets[client] = held

    def open(self, client: str, side: int, style: LiveStyle, to_page: ToPage) -> LiveSession:
        """Start a session on a free node; LiveRefused says why not."""
        if client in self._by_client:
            raise LiveRefused(
                "one_per_client",
                "You already have a live session open (one at a time); stop it first.",
            )
        side = min(max(side, MIN_SIDE), self._service.config.live_max_side)
        session = LiveSession(secrets.token_hex(8), client, side, style, to_page, Steering(side))
        self._lease_on(session, self._pick(session))
        self._sessions[session.id] = session
        self._by_client[client] = session
        return session

    def restyle(self, session: LiveSession, style: LiveStyle) -> None:
        """Paint the next frames with `style`, without stopping (at most one switch every
        `RESTYLE_EVERY` s reaches the node: a later one waits, replaced by any after it)."""
        session.style, session.restyle_due = style, True
        self._restyle_if_due(session)

    def frame(self, session: LiveSession, seq: int, image: bytes) -> None:
        """A frame from the page: checked, then sent, kept waiting, or dropped."""
        if session.ended:
            return
        now = self._service.timer()
        session.tokens = min(BURST, session.tokens + (now - session.last_token) * MAX_FPS)
        session.last_token = now
        if session.tokens < 1:
            self._drop(session, seq, "too_fast")
            return
        session.tokens -= 1
        try:
            if seq in session.in_flight:  # they are counted by number: no more than IN_FLIGHT
                raise ValueError(f"frame {seq} is at the node already; number each anew")
            check_image(image, session.side)
        except ValueError as exc:
            session.bad_in_a_row += 1
            self._drop(session, seq, "unusable", str(exc))
            if session.bad_in_a_row >= MAX_BAD_FRAMES:
                self.close(session, f"{MAX_BAD_FRAMES} unusable frames in a row ({exc}).")
            return
        session.bad_in_a_row = 0
        self._restyle_if_due(session)  # a waiting switch goes before the frame
        if session.waiting is not None:
            self._drop(session, session.waiting[0], "behind")
        session.waiting = (seq, image)
        self._pump(session)

    def close(self, session: LiveSession, message: str = "stopped", reason: str = "ended") -> None:
        """End the session: its slot goes back, the node and the page are told."""
        self._end(session, reason, message)

    # ---- from the node ---------------------------------------------------------------

    def ready(self, handle: NodeHandle, message: LiveReady) -> None:
        """The node opened the lease: frames may flow."""
        session = self._of(handle, message.lease_id)
        if session is not None and not session.ready:
            session.ready = True
            session.to_page(
                {
                    "type": "ready",
                    "side": session.steering.target,
                    "max_side": session.side,
                    "max_seconds": self._service.config.live_max_seconds,
                    "node": handle.name,
                }
            )
            self._pump(session)

    def painted(self, handle: NodeHandle, message: LivePainted) -> None:
        """A painted frame: to the page, and its round trip steers the size. One that is
        not a JPEG within the session's side is dropped: a hostile node must not hand
        pages other bytes, or a decompression bomb."""
        session = self._of(handle, message.lease_id)
        if session is None:
            return
        sent = session.in_flight.pop(message.seq, None)
        if sent is None:
            return  # not a frame of ours at the node: ignored
        try:
            check_image(message.jpeg, session.side, ("JPEG",))
        except ValueError as exc:
            log.warning("node %s painted an unusable live frame: %s", handle.name, exc)
            self._node_missed(session, handle, message.seq, f"an unusable frame: {exc}")
            return
        session.misses_in_a_row = 0
        session.painted += 1
        session.to_page(painted_bytes(message.seq, message.jpeg))
        side = session.steering.measured(self._service.timer() - sent)
        if side is not None:
            lowered = side < session.side
            session.to_page({"type": "size", "side": side, "lowered": lowered})
        self._pump(session)

    def missed(self, handle: NodeHandle, message: LiveMissed) -> None:
        """The node could not paint a frame."""
        session = self._of(handle, message.lease_id)
        if session is not None and session.in_flight.pop(message.seq, None) is not None:
            self._node_missed(session, handle, message.seq, message.message)

    def node_ended(self, handle: NodeHandle, message: LiveEnd) -> None:
        """The node refused or gave up the lease: the session moves, or ends."""
        session = self._of(handle, message.lease_id)
        if session is not None:
            why = message.message or "the node ended the live session"
            self._move(session, handle, why, told=True)

    # ---- inside ----------------------------------------------------------------------

    def _of(self, handle: NodeHandle, lease: str) -> LiveSession | None:
        session = self._by_lease.get(lease)
        return session if session is not None and session.node is handle else None

    def _pick(self, session: LiveSession) -> NodeHandle:
        """Hold a slot on the least busy live node that can paint the session's style
        and has not passed it over; LiveRefused if there is none."""
        service = self._service
        able = [
            h
            for h in self._nodes.values()
            if h.name not in session.passed_over
            and not h.dropped.is_set()
            and _serves(h, session.style)
        ]
        if not able:
            raise LiveRefused(
                "no_node",
                "No connected node can paint live with this style right now; "
                "try again later or use a photo.",
            )
        counts: dict[str, int] = {}
        for other in self._sessions.values():
            if other.node is not None:
                counts[other.node.name] = counts.get(other.node.name, 0) + 1
        for handle in sorted(able, key=lambda h: (counts.get(h.name, 0), h.name)):
            if service.scheduler.hold_live(handle.name, service.config.live_share):
                return handle
        raise LiveRefused(
            "no_slot",
            "Every node that paints live is busy; try again in a minute or use a photo.",
        )

    def _lease_on(self, session: LiveSession, handle: NodeHandle) -> None:
        """Offer the session to `handle`, whose slot `_pick` holds."""
        lease = secrets.token_hex(8)
        session.node, session.lease, session.ready = handle, lease, False
        session.offered_at = self._service.timer()
        session.restyle_due = False  # the lease opens with the current style
        self._by_lease[lease] = session
        handle.outbox.put_nowait(LiveOpen(lease, session.side, session.style))

    def _move(
        self, session: LiveSession, handle: NodeHandle, why: str, *, told: bool = False,
        stay: bool = False, lost: bool = False,
    ) -> None:  # fmt: skip
        """Take `session` off `handle` onto another node and tell the page; the node is
        sent a LiveEnd unless it `told` the relay itself (or is `lost`: gone). With no
        other node free the session ends, or with `stay` keeps its lease."""
        session.passed_over.add(handle.name)
        try:
            target: NodeHandle | None = self._pick(session)
            refused = ""
        except LiveRefused as exc:
            if stay:
                return
            target, refused = None, exc.message
        lease = session.lease
        self._forget_lease(session)
        if lease is not None and not told:
            handle.outbox.put_nowait(LiveEnd(lease, why[:1000]))
        self._release(handle)
        log.info("live session %s left node %s: %s", session.id, handle.name, why)
        if target is None:
            if lost:
                self._end(session, "node_lost", f"The node painting your camera left. {refused}")
            else:
                reason = "node_ended" if told else "node_silent"
                self._end(session, reason, f"The node stopped painting ({why}). {refused}")
            return
        self._lease_on(session, target)
        session.to_page({"type": "moved", "node": target.name})

    def _restyle_if_due(self, session: LiveSession) -> None:
        """Send the page's latest style switch if one waits and the gap has passed."""
        now = self._service.timer()
        if (
            session.restyle_due
            and session.node is not None
            and session.lease is not None
            and now - session.restyled_at >= RESTYLE_EVERY
        ):
            session.restyle_due, session.restyled_at = False, now
            session.node.outbox.put_nowait(LiveRestyle(session.lease, session.style))

    def _node_missed(self, session: LiveSession, handle: NodeHandle, seq: int, why: str) -> None:
        """The node answered frame `seq` without a usable painting: dropped; after
        `MAX_NODE_MISSES` in a row the session moves on."""
        self._drop(session, seq, "node", why)
        session.misses_in_a_row += 1
        if session.misses_in_a_row >= MAX_NODE_MISSES:
            session.misses_in_a_row = 0
            self._move(session, handle, f"{MAX_NODE_MISSES} frames in a row not painted: {why}")
        else:
            self._pump(session)

    def _pump(self, session: LiveSession) -> None:
        """Send the waiting frame if there is room at the node."""
        if (
            not session.ready
            or session.waiting is None
            or len(session.in_flight) >= IN_FLIGHT
            or session.node is None
            or session.lease is None
        ):
            return
        seq, image = session.waiting
        session.waiting = None
        session.in_flight[seq] = self._service.timer()
        session.node.outbox.put_nowait(LiveFrame(session.lease, seq, image))

    def _drop(self, session: LiveSession, seq: int, why: str, detail: str = "") -> None:
        session.dropped += 1
        event: dict[str, Any] = {"type": "dropped", "seq": seq, "why": why}
        if detail:
            event["detail"] = detail[:200]
        session.to_page(event)

    def _forget_lease(self, session: LiveSession) -> None:
        """The session's lease is over (its node went, or ended it)."""
        if session.lease is not None:
            self._by_lease.pop(session.lease, None)
        for seq in list(session.in_flight):
            self._drop(session, seq, "moved")
        session.in_flight.clear()
        session.node, session.lease, session.ready = None, None, False

    def _release(self, handle: NodeHandle) -> None:
        if handle.dropped.is_set():
            return  # gone or replaced: its slots went with it
        service = self._service
        service.apply(service.scheduler.release_live(handle.name, service.timer()))

    def _end(self, session: LiveSession, reason: str, message: str) -> None:
        if session.ended:
            return
        session.ended = True
        handle, lease = session.node, session.lease
        if handle is not None and lease is not None:
            handle.outbox.put_nowait(LiveEnd(lease, message[:1000]))
            self._by_lease.pop(lease, None)
            self._release(handle)
        session.node, session.lease = None, None
        self._sessions.pop(session.id, None)
        if self._by_client.get(session.client) is session:
            del self._by_client[session.client]
        log.info(
            "live session %s ended (%s): %d painted, %d dropped",
            session.id,
            reason,
            session.painted,
            session.dropped,
        )
        session.to_page({"type": "ended", "reason": reason, "message": message})


def _serves(handle: NodeHandle, style: LiveStyle) -> bool:
    info = handle.info
    if style.method not in info.methods:
        return False
    return style.style_id is None or style.style_id in info.styles


def live_report(sessions: LiveSessions, handle: NodeHandle, message: object) -> None:
    """Hand a node's live message to `sessions` (the node link's one call for all four)."""
    match message:
        case LiveReady():
            sessions.ready(handle, message)
        case LivePainted():
            sessions.painted(handle, message)
        case LiveMissed():
            sessions.missed(handle, message)
        case LiveEnd():
            sessions.node_ended(handle, message)
        case _:
            log.warning("node %s sent an unexpected %s", handle.name, type(message).__name__)
