"""The node registry: connected nodes, their outboxes, their paces and the fast styles of
nodes that left recently. It knows nothing of jobs; what nodes report goes to the job
service through `relay.reports`, which also registers and forgets nodes here.

    hub = NodeHub(clock, timer)
    handle, old, forgotten = hub.add(info)   # after the node authenticated
    command = await handle.outbox.get()      # OfferJob or CancelJob, in order
    hub.seen(handle)                         # any word from the node
    hub.silent(heartbeat)                    # who said nothing for too long (one rule)
    hub.remove(handle, reason)

A handle replaced by a newer connection of the same node name is no longer `current`.
"""

import logging
from collections import OrderedDict
from collections.abc import Callable

from relay import estimates
from relay.dispatch import NodeInfo
from relay.handles import FastStyle, NodeCommand, NodeHandle

log = logging.getLogger(__name__)

MISSED_HEARTBEATS = 3
"""Heartbeat intervals a node may stay silent before the relay drops it."""
RECENT_FAST_STYLES = 1024
"""Fast styles of nodes that left, still accepted in new jobs (the most recent ones)."""


class NodeHub:
    """Connected nodes by name, with what the relay keeps of them between connections."""

    def __init__(self, clock: Callable[[], float], timer: Callable[[], float]) -> None:
        self.clock = clock
        """Wall time, for people (`connected_since`, `last_seen`)."""
        self.timer = timer
        """Monotonic time: the one clock of the liveness rule (`silent`)."""
        self._handles: dict[str, NodeHandle] = {}
        self.paces: dict[str, dict[str, tuple[float, float]]] = {}
        """Each node's pace by method (relay/estimates.py): what its Hello said, corrected
        by its finished Gatys jobs; the one home of a node's speed."""
        self._paced_by_jobs: set[str] = set()
        self._recent_fast: OrderedDict[str, None] = OrderedDict()
        self.stopping = False
        """Set by `relay_stopping`: connections that end now are not their jobs' fault."""
        self.others: list[NodeInfo] = []
        """In a cluster, the nodes of the other replicas (`relay.cluster.nodes`): shown and
        offered, never scheduled here."""

    # ---- connections -----------------------------------------------------------------

    def add(self, info: NodeInfo) -> tuple[NodeHandle, NodeHandle | None, set[str]]:
        """Register an authenticated node; return its handle, the older connection of that
        name it replaced (dropped now) and the fast styles that left with it."""
        now = self.clock()
        old = self._handles.get(info.name)
        forgotten: set[str] = set()
        if old is not None:
            old.drop("replaced by a newer connection of the same node")
            forgotten = self.remember_fast(old.info.styles) - info.styles
        handle = NodeHandle(info, now, now, self.timer())
        self._handles[info.name] = handle
        # What its jobs showed outranks a new start-up warm-up's guess.
        pace = dict(info.pace)
        if info.name in self._paced_by_jobs:
            pace.update(self.paces.get(info.name, {}))
        self.paces[info.name] = pace
        return handle, old, forgotten

    def remove(self, handle: NodeHandle, reason: str) -> set[str] | None:
        """Forget a connection and drop it; return the fast styles no node has any more, or
        None if it was not current (replaced, or removed already)."""
        if not self.current(handle):
            return None
        del self._handles[handle.name]
        forgotten = self.remember_fast(handle.info.styles)
        handle.drop(reason)
        return forgotten

    def current(self, handle: NodeHandle) -> bool:
        """Whether `handle` is its node's connection now."""
        return self._handles.get(handle.name) is handle

    def replaced(self, handle: NodeHandle) -> bool:
        """True if a newer connection of the same node name took this one's place."""
        newer = self._handles.get(handle.name)
        return newer is not None and newer is not handle

    def get(self, node: str) -> NodeHandle | None:
        """The connection of a node, if it is connected."""
        return self._handles.get(node)

    def seen(self, handle: NodeHandle) -> None:
        """The node said something (a heartbeat, say): it is alive now."""
        handle.last_seen = self.clock()
        handle.heard = self.timer()

    def silent(
        self, heartbeat: float, misses: int = MISSED_HEARTBEATS
    ) -> list[tuple[NodeHandle, str]]:
        """The relay's one liveness rule: nodes that said nothing for `misses` heartbeat
        intervals on the monotonic timer, each with the reason to drop it."""
        now = self.timer()
        out = []
        for handle in self._handles.values():
            silent = now - handle.heard
            if silent > misses * heartbeat:
                out.append((handle, f"missed {misses} heartbeats ({silent:.0f} s silent)"))
        return out

    def relay_stopping(self) -> None:
        """The relay is shutting down: connections that end now are not the jobs' fault,
        so they cost no attempt (the store requeues running jobs when the relay restarts)."""
        self.stopping = True

    def send(self, node: str, command: NodeCommand) -> bool:
        """Put a command in a connected node's outbox; False if it is not connected."""
        handle = self._handles.get(node)
        if handle is None:
            return False
        handle.outbox.put_nowait(command)
        return True

    # ---- fast styles -----------------------------------------------------------------

    def all_infos(self) -> list[NodeInfo]:
        """What every node advertised: this relay's, and in a cluster the other
        replicas' (`others`), for the page's lists of methods and styles."""
        return [*self.infos(), *self.others]

    @property
    def known_fast(self) -> set[str]:
        """Fast styles a new job may ask for: those of connected nodes, and the most recent
        of nodes that left (a job for one waits for a node that has it)."""
        known = set(self._recent_fast)
        for info in self.all_infos():
            known |= info.styles
        return known

    def remember_fast(self, styles: frozenset[str]) -> set[str]:
        """Keep `styles` among the recent ones; return those this pushed out that no
        connected node has either: the relay no longer knows them."""
        pushed: set[str] = set()
        for name in sorted(styles):
            self._recent_fast[name] = None
            self._recent_fast.move_to_end(name)
        while len(self._recent_fast) > RECENT_FAST_STYLES:
            pushed.add(self._recent_fast.popitem(last=False)[0])
        for handle in self._handles.values():
            pushed -= handle.info.styles
        return pushed

    def fast_styles(self) -> dict[str, FastStyle]:
        """Fast styles offered by connected nodes (in a cluster, any replica's), by name."""
        styles: dict[str, FastStyle] = {}
        for info in self.all_infos():
            for name in info.styles:
                known = styles.get(name)
                title = info.titles.get(name) or (known.title if known else "")
                thumb = info.thumbnails.get(name) or (known.thumbnail if known else None)
                styles[name] = FastStyle(name, title or name.replace("_", " "), thumb)
        return styles

    # ---- paces -----------------------------------------------------------------------

    def measure(self, node: str, epochs: int, pixels: int, took: float) -> None:
        """Fold a finished Gatys job's time into the node's pace."""
        if epochs <= 0 or pixels <= 0 or took <= 0:
            return
        paces = self.paces.setdefault(node, {})
        first = node not in self._paced_by_jobs
        old = paces.get("gatys")
        if old is None:  # a node that measured nothing: all its time counts per pixel
            old, first = (0.0, took / estimates.units("gatys", epochs) / (pixels / 1e6)), True
        paces["gatys"] = estimates.refined(old, "gatys", epochs, pixels, took=took, first=first)
        self._paced_by_jobs.add(node)

    def learned(self) -> dict[str, dict[str, tuple[float, float]]]:
        """The paces that finished jobs showed, of the connected nodes that have them."""
        return {
            name: dict(self.paces[name])
            for name in self._handles
            if name in self._paced_by_jobs and name in self.paces
        }

    def adopt(self, node: str, pace: dict[str, tuple[float, float]]) -> None:
        """Take a pace another relay learnt from the node's jobs (a cluster's replica it
        was connected to before) as if this one had."""
        if node in self._handles and node not in self._paced_by_jobs:
            self.paces.setdefault(node, {}).update(pace)
            self._paced_by_jobs.add(node)

    def pace_view(self, node: str) -> dict[str, dict[str, float]]:
        """A node's pace as /api/nodes shows it: per method, seconds and seconds per MP."""
        return {
            method: {"seconds": round(a, 6), "seconds_per_mp": round(b, 6)}
            for method, (a, b) in sorted(self.paces.get(node, {}).items())
        }

    # ---- views -----------------------------------------------------------------------

    def infos(self) -> list[NodeInfo]:
        """What every connected node advertised."""
        return [h.info for h in self._handles.values()]
