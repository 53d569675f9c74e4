"""`Member`: one relay process's part in the cluster, and the loops that keep it so.

Started once (`start`): the tables are created if missing, the replica joins (refusing to
run beside live replicas with other limits, `relay.cluster.replicas.join`) and gets its
`PgDispatcher`. Then, until `stop`:

- every `dead_after / 3` seconds it heartbeats, so the others know it is alive;
- every `lead_every` seconds it tries to lead; the leader requeues the jobs of replicas
  silent for `dead_after` (no attempt charged) and ends silent or overdue leases
  (`PgDispatcher.tick`), so a dead replica's running jobs run again within `dead_after`
  plus `lead_every` plus a heartbeat. After the database was away (every heartbeat is
  old then) it judges no replica dead until the live ones have had time to heartbeat
  again; a replica the others forgot anyway joins again with its next heartbeat.

Whatever the loops decide (offers for this replica's nodes, cancels, requeues, failures)
goes to `apply`, the job service's, as the single relay's scheduler actions do.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from relay.cluster.database import DatabaseUnavailable, lost
from relay.cluster.dispatcher import PgDispatcher
from relay.cluster.replicas import Leader, heartbeat, join, leave, limits_of, reap
from relay.cluster.schema import migrate
from relay.config import Config
from relay.dispatch import Action, Timeouts

log = logging.getLogger(__name__)

Apply = Callable[[list[Action]], Awaitable[None]]


def timeouts_of(config: Config) -> Timeouts:
    """The scheduler's timeouts from the relay's settings (as `relay.jobs` builds them)."""
    return Timeouts(
        config.stall_timeout,
        config.epoch_budget,
        queue=config.queue_timeout,
        unservable_after=config.unservable_after,
    )


class Member:
    """This replica in the cluster: its dispatcher, its heartbeat, maybe the lead."""

    def __init__(
        self,
        pool: Any,
        leader_conn: Any,
        replica: str,
        config: Config,
        apply: Apply,
        *,
        clock: Callable[[], float] = time.time,
        lead_every: float = 1.0,
        connect: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.pool = pool
        self.leader = Leader(leader_conn, connect)
        self.replica = replica
        self.config = config
        self.apply = apply
        self.clock = clock
        self.lead_every = lead_every
        self.dead_after = config.replica_dead_after
        self.dispatcher = PgDispatcher(
            pool, replica, timeouts_of(config), max_slots=config.max_node_slots
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._linked_since: float | None = None
        """Since when this replica's heartbeats and lead reach the database without a break."""

    async def start(self) -> None:
        """Create the tables if needed, join (or raise `ReplicaMismatch`), start the loops."""
        async with self.pool.acquire() as conn:
            await migrate(conn)
            await join(conn, self.replica, limits_of(self.config), self.clock(), self.dead_after)
        self._linked_since = self.clock()
        self._tasks = [
            asyncio.create_task(self._every(self.dead_after / 3, self._heartbeat)),
            asyncio.create_task(self._every(self.lead_every, self._lead)),
        ]

    async def stop(self) -> None:
        """Stop the loops, leave the cluster and the lead (a clean shutdown)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        async with self.pool.acquire() as conn:
            await leave(conn, self.replica)
        await self.leader.step_down()

    async def _heartbeat(self) -> None:
        began = self.clock()
        async with self.pool.acquire() as conn:
            await heartbeat(conn, self.replica, began, limits_of(self.config))
        now = self.clock()
        # A heartbeat that hung as long as a period waited for the database, as a failed
        # one did: the link is counted from now.
        if self._linked_since is None or now - began > self.dead_after / 3:
            self._linked_since = now

    async def _lead(self) -> None:
        if not await self.leader.try_lead():
            return
        now = self.clock()
        # After the database was away, every replica's heartbeat is old: judge none dead
        # until each live one has had a heartbeat's time (and a round) to write again.
        settled = self.dead_after / 3 + self.lead_every
        if self._linked_since is not None and now - self._linked_since >= settled:
            await self.apply(await reap(self.dispatcher, now, self.dead_after))
        await self.apply(await self.dispatcher.tick(now))

    async def _every(self, seconds: float, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await step()
            except Exception as exc:  # the database is away a moment: the next round retries
                self._linked_since = None
                what = step.__name__.strip("_")
                if lost(exc) or isinstance(exc, DatabaseUnavailable):
                    log.warning("cluster %s: PostgreSQL is not answering (%s)", what, exc)
                else:
                    log.exception("cluster %s failed", what)
            await asyncio.sleep(seconds)
