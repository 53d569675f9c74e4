"""The cluster's dispatcher: `relay.scheduler`'s core rules as claims on PostgreSQL rows.

Each replica runs one `PgDispatcher` over the shared tables (`relay.cluster.schema`) and
places jobs only on the nodes connected to it; any replica may take a job, so a job posted
to replica A runs on a node of replica B (A notifies `CHANNEL`, naming the replicas with a
free slot; B `dispatch`es).

- Fair queue: a client's jobs in order (`place`; a job handed back goes to the front),
  clients by `turn` (round-robin: a client just served gets the newest turn). A claim
  (`stylerelay_claim`, a PL/pgSQL function in `relay.cluster.schema`: one round trip
  however many jobs it places) takes `SELECT … FOR NO KEY UPDATE OF job, client SKIP
  LOCKED`, so it never takes a job twice nor waits on a job that a finish, cancel or tick
  holds; claims themselves take turns under a transaction-level advisory lock
  (`CLAIM_LOCK`), so the round-robin order is exact across replicas.
- Capability and caps: a job goes only to a node that offers its method and styles and
  whose `max_epochs` and `max_pixels` cover it, with a free slot (its running jobs and the
  stops it has not confirmed, counted from the table, under the node row's lock).
- Fenced leases: every claim has a new lease id; progress, results, failures and declines
  count only with the current lease of the current node, in one conditional UPDATE, so a
  late completion from a node or replica that lost the lease is refused (`StaleLease`)
  and a result is recorded once. A finish and the claim for the slot it freed are one
  call (`stylerelay_finish`); a submit is two (the insert, then a claim that notifies).
- Attempts: a lost node or a stall charges an attempt (`max_attempts` ends fail the job);
  a node that says Bye hands its jobs back free (up to `free_handbacks`); a replica that
  died (`relay.cluster.replicas`) hands them back without charging anything.
- A node that failed a job gets it again only if no other registered node could run it.

Not (yet) here, kept by the single relay's `Scheduler`: client priorities, probation and
rest of unproven or failing nodes (`relay.reputation`), the unservable count and the
words of `why_waiting`.

Lock order, everywhere: node row, then job rows, then client rows (no deadlocks). A claim
takes the claim lock first and then waits for nothing (it skips rows others hold), so a
finish may hold its job row while it queues for the claim lock.
"""

import functools
import secrets
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg

from relay.cluster import schema
from relay.cluster.contract import StaleLease
from relay.cluster.database import RETRY_FOR, retrying
from relay.cluster.schema import STALE_LEASE, TOO_MANY_OPEN
from relay.dispatch import (
    Action,
    Failed,
    JobTicket,
    NodeInfo,
    Requeued,
    SendCancel,
    SendOffer,
    Timeouts,
    waited_too_long,
)
from relay.errors import TooManyRequests

CHANNEL = schema.CHANNEL
"""NOTIFY channel: queued work for the replicas named in the payload (empty: all); see
`concerns`. Its home is `relay.cluster.schema`, whose claim function notifies on it."""

CLAIM_LOCK = schema.CLAIM_LOCK
"""Advisory lock key that claims take (per transaction) to take turns; the shared queue
(`relay.cluster.queue`) takes it too."""

CLAIM_BATCH = 16
"""Lease ids sent with one claim: the most jobs it places (more free slots: it goes on)."""

_RUNNING_JOB = """
    SELECT id, client, state, attempts, handbacks, lease, node
    FROM jobs WHERE id = $1 FOR UPDATE
"""


P = ParamSpec("P")
T = TypeVar("T")


def _resilient(
    method: "Callable[Concatenate[PgDispatcher, P], Coroutine[Any, Any, T]]",
) -> "Callable[Concatenate[PgDispatcher, P], Coroutine[Any, Any, T]]":
    """Run the method again (whole: its transactions did not commit) while PostgreSQL is
    unreachable, for up to `retry_for` seconds; then 503 (`relay.cluster.database`)."""

    @functools.wraps(method)
    async def wrapper(self: "PgDispatcher", /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await retrying(lambda: method(self, *args, **kwargs), self.retry_for)

    return wrapper


class PgDispatcher:
    """One replica's view of the shared queue (see the module docstring)."""

    def __init__(
        self,
        pool: Any,
        replica: str,
        timeouts: Timeouts | None = None,
        *,
        max_slots: int = 4,
        lease_id: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self.pool = pool
        """An asyncpg pool on the shared database."""
        self.replica = replica
        self.timeouts = timeouts or Timeouts()
        self.max_slots = max_slots
        self._lease_id = lease_id
        self.retry_for = RETRY_FOR
        """Seconds a call retries a lost database before it answers 503."""

    # ---- questions -------------------------------------------------------------------

    @_resilient
    async def lease_of(self, job_id: str) -> tuple[str, str] | None:
        """(node, lease) of a running job, or None."""
        row = await self.pool.fetchrow(
            "SELECT node, lease FROM jobs WHERE id = $1 AND state = 'running'", job_id
        )
        return None if row is None else (row["node"], row["lease"])

    @_resilient
    async def open_jobs(self, client: str) -> int:
        """Queued plus running jobs of one client, on every replica."""
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE client = $1 AND state IN ('queued', 'running')",
            client,
        )
        return count

    @_resilient
    async def counts(self) -> tuple[int, int]:
        """(queued, running) jobs, on every replica."""
        row = await self.pool.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'queued') AS queued,"
            " count(*) FILTER (WHERE state = 'running') AS running FROM jobs"
            " WHERE state IN ('queued', 'running')"  # an index scan, not every job ever
        )
        return row["queued"], row["running"]

    @_resilient
    async def state_of(self, job_id: str) -> tuple[str, int, str | None]:
        """(state, attempts, result) of a job (tests and the job service's views)."""
        row = await self.pool.fetchrow(
            "SELECT state, attempts, result FROM jobs WHERE id = $1", job_id
        )
        if row is None:
            raise KeyError(job_id)
        return row["state"], row["attempts"], row["result"]

    # ---- events ----------------------------------------------------------------------

    @_resilient
    async def submit(
        self,
        job: JobTicket,
        now: float,
        *,
        max_open: int | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> list[Action]:
        """A new job joins the back of its client's queue. With `max_open`, refuse (429)
        when the client already has that many queued or running, across every replica
        (checked and inserted under one per-client lock). `record`: more columns of the
        row (`relay.cluster.records`), inserted with it."""
        try:
            await self._insert({**self._row(job, now), **(record or {})}, max_open)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == TOO_MANY_OPEN:
                raise TooManyRequests(
                    f"You already have {max_open} jobs queued or running; "
                    "wait for one to finish or cancel one."
                ) from None
            raise
        return await self._claim(now, notify=True)

    @_resilient
    async def node_up(self, info: NodeInfo, now: float) -> list[Action]:
        """A node connected to this replica (one of its name, anywhere, is replaced)."""
        actions: list[Action] = []
        if await self.pool.fetchval("SELECT 1 FROM nodes WHERE name = $1", info.name):
            actions += await self.node_down(info.name, now, f"node {info.name} reconnected")
        await self.pool.execute(
            "INSERT INTO nodes (name, replica, methods, styles, max_epochs, max_pixels, slots)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            info.name,
            self.replica,
            sorted(info.methods),
            sorted(info.styles),
            info.max_epochs,
            info.max_pixels,
            max(1, min(info.slots, self.max_slots)),
        )
        return actions + await self.dispatch(now)

    @_resilient
    async def node_draining(self, name: str) -> None:
        """A node is leaving: it keeps its running jobs but gets no new ones."""
        await self.pool.execute("UPDATE nodes SET draining = true WHERE name = $1", name)

    @_resilient
    async def node_down(
        self, name: str, now: float, reason: str | None = None, *, deliberate: bool = False
    ) -> list[Action]:
        """A node is gone: its jobs go back to the queue (or fail after too many tries)."""
        actions: list[Action] = []
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("DELETE FROM nodes WHERE name = $1 RETURNING 1", name) is None:
                return []
            await conn.execute("DELETE FROM stopping WHERE node = $1", name)
            ids = await conn.fetch(
                "SELECT id FROM jobs WHERE node = $1 AND state = 'running' ORDER BY id", name
            )
            why = reason or f"node {name} was lost"
            for row in ids:
                job = await conn.fetchrow(_RUNNING_JOB, row["id"])
                actions.append(await self._end_lease(conn, job, why, now, handed_back=deliberate))
        return actions + await self.dispatch(now)

    @_resilient
    async def progress(self, node: str, job_id: str, lease: str, now: float) -> bool:
        """The node reports progress; True if it counts (the lease is current)."""
        done = await self.pool.fetchval(
            "UPDATE jobs SET silent_until = $4::float8 + stall WHERE id = $1 AND lease = $2"
            " AND node = $3 AND state = 'running' RETURNING 1",
            job_id,
            lease,
            node,
            now,
        )
        return done is not None

    @_resilient
    async def finished(
        self, node: str, job_id: str, lease: str, now: float, result: str | None = None
    ) -> list[Action]:
        """The current lease delivered its result (`result`, recorded once); StaleLease if
        the lease is not current (a late or repeated completion)."""
        # One round trip: the fenced completion, then a claim for the slot it freed.
        try:
            rows = await self.pool.fetch(
                "SELECT * FROM stylerelay_finish($1, $2, $3, $4, $5, $6, $7)",
                job_id,
                lease,
                node,
                result,
                now,
                self.replica,
                self._leases(),
            )
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == STALE_LEASE:
                raise StaleLease(
                    f"lease {lease} of job {job_id} on {node} is not current"
                ) from None
            raise
        return await self._offers(rows, now)

    @_resilient
    async def failed(
        self, node: str, job_id: str, lease: str, now: float, *, reason: str, retry: bool
    ) -> list[Action]:
        """The node could not run the job: retry elsewhere, or fail it if `retry` is False
        and no other registered node that could run it and has not failed it is left."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM nodes WHERE name = $1 FOR UPDATE", node)
            job = await conn.fetchrow(_RUNNING_JOB, job_id)
            if not _current(job, node, lease):
                return []
            await conn.execute(
                "UPDATE jobs SET failed_on = array_append(failed_on, $2) WHERE id = $1",
                job_id,
                node,
            )
            if not retry and await self._second_opinion(conn, job_id):
                await conn.execute(
                    "UPDATE jobs SET declined_by = array_append(declined_by, $2) WHERE id = $1",
                    job_id,
                    node,
                )
                retry = True
            if retry:
                job = await conn.fetchrow(_RUNNING_JOB, job_id)
                actions: list[Action] = [await self._end_lease(conn, job, reason, now)]
            else:
                await self._end(conn, job_id, "failed", reason, now)
                actions = [Failed(job_id, reason)]
        return actions + await self.dispatch(now)

    @_resilient
    async def declined(
        self, node: str, job_id: str, lease: str, reason: str, now: float
    ) -> list[Action]:
        """The node refused the offer: not an attempt, and never offered that job again."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM nodes WHERE name = $1 FOR UPDATE", node)
            job = await conn.fetchrow(_RUNNING_JOB, job_id)
            if not _current(job, node, lease):
                return []
            await conn.execute(
                "UPDATE jobs SET declined_by = array_append(declined_by, $2) WHERE id = $1",
                job_id,
                node,
            )
            await self._requeue_front(conn, job, now)
        return await self.dispatch(now)

    @_resilient
    async def cancel(self, job_id: str, now: float) -> list[Action] | None:
        """Take a job away: dequeue it, or tell its node to stop (its slot stays busy until
        the node confirms or `stop_grace` passes). None if it is not scheduled."""
        async with self.pool.acquire() as conn, conn.transaction():
            job = await conn.fetchrow(
                "SELECT state, node, lease FROM jobs WHERE id = $1 FOR UPDATE", job_id
            )
            if job is None or job["state"] not in ("queued", "running"):
                return None
            await self._end(conn, job_id, "cancelled", "cancelled", now)
            if job["state"] == "queued":
                return []
            await self._stopping(conn, job["node"], job["lease"], now + self.timeouts.stop_grace)
        return [SendCancel(job["node"], job_id, job["lease"]), *await self.dispatch(now)]

    @_resilient
    async def lease_closed(self, node: str, lease: str, now: float) -> list[Action]:
        """The node ended a lease it was told to stop: its slot is free again."""
        gone = await self.pool.fetchval(
            "DELETE FROM stopping WHERE node = $1 AND lease = $2 RETURNING 1", node, lease
        )
        return [] if gone is None else await self.dispatch(now)

    @_resilient
    async def tick(self, now: float) -> list[Action]:
        """End leases that went silent or ran past their deadline (on every replica: the
        leader runs this), fail queued jobs that waited too long, free slots whose stop
        was never confirmed."""
        actions: list[Action] = []
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM stopping WHERE until < $1", now)
            expired = await conn.fetch(
                "UPDATE jobs SET state = 'failed', ended = $1 WHERE state = 'queued'"
                " AND wait_until < $1 RETURNING id",
                now,
            )
            reason = waited_too_long(self.timeouts.queue, None)
            for row in expired:
                await conn.execute("UPDATE jobs SET reason = $2 WHERE id = $1", row["id"], reason)
                actions.append(Failed(row["id"], reason))
            overdue = await conn.fetch(
                "SELECT id, node, lease, silent_until < $1 AS silent, deadline - lease_started"
                " AS limit, stall FROM jobs WHERE state = 'running'"
                " AND (silent_until < $1 OR deadline < $1) ORDER BY node, id",
                now,
            )
            for row in overdue:
                await conn.execute("SELECT 1 FROM nodes WHERE name = $1 FOR UPDATE", row["node"])
                job = await conn.fetchrow(_RUNNING_JOB, row["id"])
                if not _current(job, row["node"], row["lease"]):
                    continue
                if row["silent"]:
                    why = f"node {row['node']} showed no progress for {row['stall']:.0f} s"
                else:
                    why = f"node {row['node']} did not finish within {row['limit']:.0f} s"
                actions.append(SendCancel(row["node"], row["id"], row["lease"]))
                await self._stopping(
                    conn, row["node"], row["lease"], now + self.timeouts.stop_grace
                )
                await conn.execute(
                    "UPDATE jobs SET failed_on = array_append(failed_on, $2) WHERE id = $1",
                    row["id"],
                    row["node"],
                )
                actions.append(await self._end_lease(conn, job, why, now))
        return actions + await self.dispatch(now)

    @_resilient
    async def dispatch(self, now: float) -> list[Action]:
        """Offer queued jobs to this replica's nodes while they have free slots."""
        return list(await self._claim(now))

    def concerns(self, payload: str) -> bool:
        """Whether a NOTIFY on `CHANNEL` with this payload asks this replica to
        `dispatch` (it names the replicas with a free slot; empty: every one)."""
        return not payload or self.replica in payload.split(",")

    @_resilient
    async def requeue_replica(self, replica: str, now: float, reason: str) -> list[Action]:
        """A replica died: its running jobs go back to the front of the queue without
        charging an attempt or a hand-back, and its nodes leave the registry (they will
        dial another replica)."""
        actions: list[Action] = []
        async with self.pool.acquire() as conn, conn.transaction():
            names = await conn.fetch(
                "SELECT name FROM nodes WHERE replica = $1 ORDER BY name FOR UPDATE", replica
            )
            ids = await conn.fetch(
                "SELECT id FROM jobs WHERE replica = $1 AND state = 'running' ORDER BY id",
                replica,
            )
            for row in ids:
                job = await conn.fetchrow(_RUNNING_JOB, row["id"])
                await self._requeue_front(conn, job, now)
                actions.append(Requeued(row["id"], job["attempts"], reason))
            node_names = [r["name"] for r in names]
            await conn.execute("DELETE FROM stopping WHERE node = ANY($1::text[])", node_names)
            await conn.execute("DELETE FROM nodes WHERE replica = $1", replica)
            if ids:
                await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
        return actions + await self.dispatch(now)

    # ---- inside ----------------------------------------------------------------------

    def _row(self, job: JobTicket, now: float) -> dict[str, Any]:
        """The columns of a new job's row (its lease limits are fixed here, from the
        replicas' shared timeouts, so that a claim needs nothing but the row)."""
        return {
            "id": job.id,
            "client": job.client,
            "method": job.method,
            "epochs": job.epochs,
            "pixels": job.pixels,
            "fast_styles": sorted(job.fast_styles),
            "wait_until": now + self.timeouts.queue,
            "stall": self.timeouts.stall_limit(job),
            "run_limit": self.timeouts.run_limit(job),
        }

    async def _insert(self, row: dict[str, Any], max_open: int | None) -> None:
        """Queue a job (`row`: its columns), in one statement (a round trip counts): a
        client with nothing queued joins the back of the rotation; the job joins the
        back of its client's queue; a job id already there is left alone. With
        `max_open`, `stylerelay_admit` refuses it first if the client is at the cap."""
        head: list[Any] = [row["client"]] if max_open is None else [row["client"], max_open]
        names = ", ".join(row)
        values = ", ".join(f"${i}" for i in range(len(head) + 1, len(head) + len(row) + 1))
        # The admission is a subquery of the row, so it runs (and locks) before the
        # insert. The client's row is locked only if it is new or has nothing queued (an
        # upsert would lock it always, and claims pass over a locked client).
        state = "'queued'" if max_open is None else "(SELECT stylerelay_admit($1, $2))"
        await self.pool.execute(
            "WITH u AS (UPDATE clients SET turn = nextval('turns') WHERE client = $1"
            " AND NOT EXISTS (SELECT 1 FROM jobs WHERE client = $1 AND state = 'queued')),"
            " i AS (INSERT INTO clients SELECT $1, nextval('turns') WHERE NOT EXISTS"
            " (SELECT 1 FROM clients WHERE client = $1) ON CONFLICT (client) DO NOTHING)"
            f" INSERT INTO jobs ({names}, state, place)"
            f" VALUES ({values}, {state}, nextval('places')) ON CONFLICT (id) DO NOTHING",
            *head,
            *row.values(),
        )

    def _leases(self) -> list[str]:
        return [self._lease_id() for _ in range(CLAIM_BATCH)]

    async def _claim(self, now: float, *, notify: bool = False) -> list[Action]:
        """Lease queued jobs in fair order to this replica's free slots (one round trip:
        `stylerelay_claim` in `relay.cluster.schema`). With `notify`, wake the replicas
        that have a free slot if work is left over."""
        rows = await self.pool.fetch(
            "SELECT * FROM stylerelay_claim($1, $2, $3, $4)",
            self.replica,
            now,
            self._leases(),
            notify,
        )
        return await self._offers(rows, now)

    async def _offers(self, rows: list[Any], now: float) -> list[Action]:
        """The offers of a claim's rows; a claim that used every lease id goes on."""
        offers: list[Action] = [
            SendOffer(r["offer_node"], r["offer_job"], r["offer_lease"]) for r in rows
        ]
        if len(rows) == CLAIM_BATCH:
            offers += await self._claim(now)
        return offers

    async def _end_lease(
        self, conn: Any, job: Any, reason: str, now: float, *, handed_back: bool = False
    ) -> Action:
        """The job's lease ended abnormally: requeue it at the front, or fail it after
        `max_attempts` (a hand-back by a node that said Bye is free, up to a limit)."""
        attempts, handbacks = job["attempts"], job["handbacks"]
        if handed_back and handbacks < self.timeouts.free_handbacks:
            handbacks += 1
        else:
            attempts += 1
            if attempts >= self.timeouts.max_attempts:
                why = f"Gave up after {attempts} attempts; last: {reason}."
                await conn.execute(
                    "UPDATE jobs SET attempts = $2 WHERE id = $1", job["id"], attempts
                )
                await self._end(conn, job["id"], "failed", why, now)
                return Failed(job["id"], why, attempts)
        await conn.execute(
            "UPDATE jobs SET attempts = $2, handbacks = $3 WHERE id = $1",
            job["id"],
            attempts,
            handbacks,
        )
        await self._requeue_front(conn, job, now)
        return Requeued(job["id"], attempts, reason)

    async def _requeue_front(self, conn: Any, job: Any, now: float) -> None:
        """Back to the front of its client's queue; time on the node does not count
        against its wait. A client with nothing queued gets the very next turn."""
        await conn.execute(
            "UPDATE clients SET turn = (SELECT min(turn) - 1 FROM clients) WHERE client = $1"
            " AND NOT EXISTS (SELECT 1 FROM jobs WHERE client = $1 AND state = 'queued')",
            job["client"],
        )
        await conn.execute(
            "UPDATE jobs SET state = 'queued', place = -nextval('places'), lease = NULL,"
            " node = NULL, replica = NULL, wait_until = wait_until + ($2::float8 - lease_started)"
            " WHERE id = $1",
            job["id"],
            now,
        )
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)

    async def _end(self, conn: Any, job_id: str, state: str, reason: str, now: float) -> None:
        await conn.execute(
            "UPDATE jobs SET state = $2, reason = $3, ended = $4, lease = NULL WHERE id = $1",
            job_id,
            state,
            reason,
            now,
        )

    async def _stopping(self, conn: Any, node: str, lease: str, until: float) -> None:
        if await conn.fetchval("SELECT 1 FROM nodes WHERE name = $1", node):
            await conn.execute(
                "INSERT INTO stopping VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                node,
                lease,
                until,
            )

    async def _second_opinion(self, conn: Any, job_id: str) -> bool:
        """Whether another registered node could run the job and has neither failed nor
        declined it."""
        found = await conn.fetchval(
            "SELECT 1 FROM jobs j JOIN nodes o ON NOT o.draining"
            " AND NOT (o.name = ANY(j.failed_on)) AND NOT (o.name = ANY(j.declined_by))"
            " AND j.method = ANY(o.methods) AND j.fast_styles <@ o.styles"
            " AND j.epochs <= o.max_epochs AND j.pixels <= o.max_pixels"
            " WHERE j.id = $1 LIMIT 1",
            job_id,
        )
        return found is not None


def _current(job: Any, node: str, lease: str) -> bool:
    return (
        job is not None
        and job["state"] == "running"
        and job["lease"] == lease
        and job["node"] == node
    )
