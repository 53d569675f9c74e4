"""What the relay has learnt of each node from its jobs: whether it has proven itself, and
whether to rest it because its jobs keep failing while other nodes finish theirs.

Trust is earned: a node is proven once it has finished a job, and stays proven (reconnects
and idle hours included) until one of its jobs stalls, that is goes silent or overruns its
deadline: the one misdeed a node can commit at no cost to itself. How the scheduler treats
unproven nodes is in `relay.scheduler`.

The rest rule, on the scheduler's clock (no clock of its own):

- a fault is a job failure on the node (what it reported, or an unusable result), a stall,
  or an unusable preview; a finished job resets the node's count;
- a node with `PAUSE_AFTER` faults in a row is rested for `pause` seconds as soon as another
  node has finished a job within the last `pause` seconds: then the jobs were not the
  problem. With no other node succeeding (every node struggles, or it is alone) nobody is
  rested, and the jobs' attempts decide as before;
- records are kept by node name, so reconnecting does not end a rest; after a rest one more
  fault rests the node again.
"""

from dataclasses import dataclass

from relay.dispatch import NodePaused

PAUSE_AFTER = 3
"""Faults in a row after which a node is rested (if another node succeeds meanwhile)."""


@dataclass
class _Record:
    faults: int = 0
    last_fault: str = ""
    last_done: float | None = None
    paused_until: float | None = None
    pause_reason: str = ""
    proven: bool = False


class Reputation:
    """Faults and rests of every node seen since the relay started, by name."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self._records: dict[str, _Record] = {}

    def paused(self, name: str) -> bool:
        """Whether `name` is resting now (until the next `wake`)."""
        record = self._records.get(name)
        return record is not None and record.paused_until is not None

    def proven(self, name: str) -> bool:
        """Whether `name` has finished a job and has not stalled one since."""
        record = self._records.get(name)
        return record is not None and record.proven

    def pause_of(self, name: str) -> tuple[float, str] | None:
        """(until, reason) of a resting node, or None."""
        record = self._records.get(name)
        if record is None or record.paused_until is None:
            return None
        return record.paused_until, record.pause_reason

    def fault(self, name: str, now: float, reason: str) -> list[NodePaused]:
        """`name` failed a job or sent garbage; it may be rested now."""
        record = self._records.setdefault(name, _Record())
        record.faults += 1
        record.last_fault = reason
        return self._maybe_pause(name, now)

    def stalled(self, name: str, now: float, reason: str) -> list[NodePaused]:
        """A job of `name` went silent or ran past its deadline: a fault, and it is no
        longer proven (sitting on jobs is how a node abuses the relay's trust)."""
        self._records.setdefault(name, _Record()).proven = False
        return self.fault(name, now, reason)

    def done(self, name: str, now: float) -> list[NodePaused]:
        """`name` finished a job: its count starts over, and others failing meanwhile are
        now known to be at fault."""
        record = self._records.setdefault(name, _Record())
        record.faults, record.last_done, record.proven = 0, now, True
        return [p for other in sorted(self._records) for p in self._maybe_pause(other, now)]

    def wake(self, now: float) -> bool:
        """End rests that are over; True if any did."""
        woke = False
        for record in self._records.values():
            if record.paused_until is not None and now >= record.paused_until:
                record.paused_until, record.pause_reason = None, ""
                record.faults = PAUSE_AFTER - 1  # on probation: one more fault rests it
                woke = True
        return woke

    def _maybe_pause(self, name: str, now: float) -> list[NodePaused]:
        record = self._records[name]
        if record.paused_until is not None or record.faults < PAUSE_AFTER:
            return []
        others_ok = any(
            other != name and r.last_done is not None and now - r.last_done <= self.pause
            for other, r in self._records.items()
        )
        if not others_ok:
            return []
        record.paused_until = now + self.pause
        record.pause_reason = (
            f"{record.faults} jobs in a row failed here while other nodes finished theirs; "
            f"last: {record.last_fault}"
        )
        return [NodePaused(name, self.pause, record.pause_reason)]
