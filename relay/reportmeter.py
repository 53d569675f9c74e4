"""How often a node may report progress, previews and checkpoints, and when it floods.

Reports beyond the allowance of a lease are dropped, not published: watchers need a few
updates a second, not thousands. A node whose reports run far beyond any honest pace for
several seconds in a row is flooding and is dropped. Counted in windows of one second.

    meter = ReportMeter(timer)
    if meter.allow(PROGRESS, job_id, lease):    # False: drop this report
        reports.progress(...)
    if meter.flooding:                          # say Bye and drop the node
        ...
"""

from collections.abc import Callable
from enum import Enum


class Report(Enum):
    """The kinds of report that are metered."""

    PROGRESS = "progress"
    PREVIEW = "preview"
    CHECKPOINT = "checkpoint"


PER_SECOND = {Report.PROGRESS: 20, Report.PREVIEW: 2, Report.CHECKPOINT: 4}
"""Reports of each kind published per lease and second; more are dropped."""
FLOOD_FACTOR = 10
"""A node sending more than this many times one lease's allowance in a second is flooding
that second (an honest node runs at most a few leases, each well within its allowance)."""
FLOOD_SECONDS = 3
"""Seconds of flooding in a row after which the node is dropped."""
MAX_TRACKED_LEASES = 64
"""Leases counted per second; a node naming more is flooding with made-up leases."""


class ReportMeter:
    """Per-lease allowances and flood detection for one node connection."""

    def __init__(self, timer: Callable[[], float]) -> None:
        self._timer = timer
        self._second: int | None = None
        self._counts: dict[tuple[Report, str, str], int] = {}
        self._totals = dict.fromkeys(Report, 0)
        self._run = 0
        """Seconds of flooding in a row, up to the last flooded one."""
        self._last_flooded: int | None = None
        self.flooding = False
        """True once the node flooded for FLOOD_SECONDS seconds in a row."""

    def allow(self, kind: Report, job_id: str, lease: str) -> bool:
        """Count one report; True if it is within its lease's allowance."""
        second = int(self._timer())
        if second != self._second:
            self._second = second
            self._counts.clear()
            self._totals = dict.fromkeys(Report, 0)
        key = (kind, job_id, lease)
        count = self._counts.get(key, 0) + 1
        if count == 1 and len(self._counts) >= MAX_TRACKED_LEASES:
            self._totals[kind] += FLOOD_FACTOR * PER_SECOND[kind]  # made-up leases: a flood
            count = PER_SECOND[kind] + 1
        else:
            self._counts[key] = count
            self._totals[kind] += 1
        if self._totals[kind] > FLOOD_FACTOR * PER_SECOND[kind] and self._last_flooded != second:
            in_a_row = self._last_flooded == second - 1
            self._run = self._run + 1 if in_a_row else 1
            self._last_flooded = second
            self.flooding = self.flooding or self._run >= FLOOD_SECONDS
        return count <= PER_SECOND[kind]
