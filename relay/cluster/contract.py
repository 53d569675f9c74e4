"""The dispatcher contract that the single relay and the cluster both keep.

`Dispatch` is the part of `relay.scheduler.Scheduler` the job service drives (events in,
actions out, `now` passed in), made async because the cluster's answers come from
PostgreSQL. `LocalDispatch` is the single process's `Scheduler` behind it, unchanged;
`relay.cluster.dispatcher.PgDispatcher` is the cluster's. One conformance suite
(tests/test_cluster_dispatch.py) runs the same scheduling tests against both.
"""

from typing import Protocol

from relay.dispatch import Action, JobTicket, NodeInfo
from relay.scheduler import Scheduler


class StaleLease(ValueError):
    """A completion under a lease that is not the job's current one (it was fenced off)."""


class Dispatch(Protocol):
    """Fair queue, capability matching and fenced leases (see `relay.scheduler`)."""

    async def submit(self, job: JobTicket, now: float) -> list[Action]:
        """A new job joins the back of its client's queue."""
        ...

    async def node_up(self, info: NodeInfo, now: float) -> list[Action]:
        """A node connected (to this replica)."""
        ...

    async def node_down(
        self, name: str, now: float, reason: str | None = None, *, deliberate: bool = False
    ) -> list[Action]:
        """A node is gone; `deliberate`: it said Bye (no attempt is charged)."""
        ...

    async def progress(self, node: str, job_id: str, lease: str, now: float) -> bool:
        """The node reports progress; True if its lease is current."""
        ...

    async def finished(self, node: str, job_id: str, lease: str, now: float) -> list[Action]:
        """The current lease delivered its result; StaleLease if it is not current."""
        ...

    async def failed(
        self, node: str, job_id: str, lease: str, now: float, *, reason: str, retry: bool
    ) -> list[Action]:
        """The node could not run the job."""
        ...

    async def declined(
        self, node: str, job_id: str, lease: str, reason: str, now: float
    ) -> list[Action]:
        """The node refused the offer: never offered that job again."""
        ...

    async def cancel(self, job_id: str, now: float) -> list[Action] | None:
        """Take a job away; None if it is not scheduled."""
        ...

    async def lease_closed(self, node: str, lease: str, now: float) -> list[Action]:
        """The node ended a lease it was told to stop: its slot is free."""
        ...

    async def tick(self, now: float) -> list[Action]:
        """End silent or overdue leases; fail jobs that waited too long."""
        ...

    async def lease_of(self, job_id: str) -> tuple[str, str] | None:
        """(node, lease) of a running job, or None."""
        ...

    async def open_jobs(self, client: str) -> int:
        """Queued plus running jobs of one client."""
        ...

    async def counts(self) -> tuple[int, int]:
        """(queued, running) jobs."""
        ...


class LocalDispatch:
    """The single relay's `Scheduler` behind the `Dispatch` contract."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    async def submit(self, job: JobTicket, now: float) -> list[Action]:
        """See `Dispatch.submit`."""
        return self.scheduler.submit(job, now)

    async def node_up(self, info: NodeInfo, now: float) -> list[Action]:
        """See `Dispatch.node_up`."""
        return self.scheduler.node_up(info, now)

    async def node_down(
        self, name: str, now: float, reason: str | None = None, *, deliberate: bool = False
    ) -> list[Action]:
        """See `Dispatch.node_down`."""
        return self.scheduler.node_down(name, now, reason, deliberate=deliberate)

    async def progress(self, node: str, job_id: str, lease: str, now: float) -> bool:
        """See `Dispatch.progress`."""
        return self.scheduler.progress(node, job_id, lease, now)

    async def finished(self, node: str, job_id: str, lease: str, now: float) -> list[Action]:
        """See `Dispatch.finished`."""
        if not self.scheduler.is_current(node, job_id, lease):
            raise StaleLease(f"lease {lease} of job {job_id} on {node} is not current")
        return self.scheduler.finished(node, job_id, lease, now)

    async def failed(
        self, node: str, job_id: str, lease: str, now: float, *, reason: str, retry: bool
    ) -> list[Action]:
        """See `Dispatch.failed`."""
        return self.scheduler.failed(node, job_id, lease, now, reason=reason, retry=retry)

    async def declined(
        self, node: str, job_id: str, lease: str, reason: str, now: float
    ) -> list[Action]:
        """See `Dispatch.declined`."""
        return self.scheduler.declined(node, job_id, lease, reason, now)

    async def cancel(self, job_id: str, now: float) -> list[Action] | None:
        """See `Dispatch.cancel`."""
        return self.scheduler.cancel(job_id, now)

    async def lease_closed(self, node: str, lease: str, now: float) -> list[Action]:
        """See `Dispatch.lease_closed`."""
        return self.scheduler.lease_closed(node, lease, now)

    async def tick(self, now: float) -> list[Action]:
        """See `Dispatch.tick`."""
        return self.scheduler.tick(now)

    async def lease_of(self, job_id: str) -> tuple[str, str] | None:
        """See `Dispatch.lease_of`."""
        return self.scheduler.lease_of(job_id)

    async def open_jobs(self, client: str) -> int:
        """See `Dispatch.open_jobs`."""
        return self.scheduler.open_jobs(client)

    async def counts(self) -> tuple[int, int]:
        """See `Dispatch.counts`."""
        return self.scheduler.queued, self.scheduler.running
