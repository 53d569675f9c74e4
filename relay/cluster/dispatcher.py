"""The cluster's dispatcher: `relay.scheduler`'s core rules as claims on PostgreSQL rows.

Each replica runs one `PgDispatcher` over the shared tables (`relay.cluster.schema`) and
places jobs only on the nodes connected to it; any replica may take a job, so a job posted
to replica A runs on a node of replica B (A notifies `CHANNEL`; B `dispatch`es).

- Fair queue: a client's jobs in order (`place`; a job handed back goes to the front),
  clients by `turn` (round-robin: a client just served gets the newest turn). A claim takes
  `SELECT … FOR UPDATE OF job, client SKIP LOCKED`, so it never takes a job twice nor
  waits on a job that a finish, cancel or tick holds; claims themselves take turns under
  a transaction-level advisory lock (`CLAIM_LOCK`), so the round-robin order is exact
  across replicas (measured by bench/cluster.py).
- Capability and caps: a job goes only to a node that offers its method and styles and
  whose `max_epochs` and `max_pixels` cover it, with a free slot (its running jobs and the
  stops it has not confirmed, counted from the table, under the node row's lock).
- Fenced leases: every claim has a new lease id; progress, results, failures and declines
  count only with the current lease of the current node, in one conditional UPDATE, so a
  late completion from a node or replica that lost the lease is refused (`StaleLease`)
  and a result is recorded once.
- Attempts: a lost node or a stall charges an attempt (`max_attempts` ends fail the job);
  a node that says Bye hands its jobs back free (up to `free_handbacks`); a replica that
  died (`relay.cluster.replicas`) hands them back without charging anything.
- A node that failed a job gets it again only if no other registered node could run it.

Not (yet) here, kept by the single relay's `Scheduler`: client priorities, probation and
rest of unproven or failing nodes (`relay.reputation`), the unservable count and the
words of `why_waiting`.

Lock order, everywhere: node row, then job rows, then client rows (no deadlocks); a
finish locks only its job row.
"""

import functools
import secrets
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

from relay.cluster.contract import StaleLease
from relay.cluster.database import RETRY_FOR, retrying
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

CHANNEL = "stylerelay_work"
"""NOTIFY channel: a job joined the queue or a slot freed up; replicas `dispatch` on it."""

_RUNNING_JOB = """
    SELECT id, client, state, attempts, handbacks, lease, node
    FROM jobs WHERE id = $1 FOR UPDATE
"""

_PICK = """
    SELECT j.id, j.client, j.method, j.epochs, j.pixels, j.fast_styles
    FROM jobs j JOIN clients c ON c.client = j.client
    WHERE j.state = 'queued' AND j.not_before <= $1
      AND j.method = ANY($2::text[]) AND j.fast_styles <@ $3::text[]
      AND j.epochs <= $4 AND j.pixels <= $5
      AND NOT ($6 = ANY(j.declined_by))
      AND NOT ($6 = ANY(j.failed_on) AND EXISTS (
          SELECT 1 FROM nodes o
          WHERE o.name <> $6 AND NOT o.draining
            AND NOT (o.name = ANY(j.failed_on)) AND NOT (o.name = ANY(j.declined_by))
            AND j.method = ANY(o.methods) AND j.fast_styles <@ o.styles
            AND j.epochs <= o.max_epochs AND j.pixels <= o.max_pixels))
    ORDER BY c.turn, j.place
    LIMIT 1
    FOR UPDATE OF j, c SKIP LOCKED
"""

CLAIM_LOCK = 0x5354_594C_0003
"""Advisory lock key taken (per transaction) around each claim, see `_claim_one`."""

_BUSY = """
    (SELECT count(*) FROM jobs j WHERE j.node = n.name AND j.state = 'running')
    + (SELECT count(*) FROM stopping s WHERE s.node = n.name AND s.until >= $2)
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


def spec_of(row: Any) -> JobTicket:
    """The `JobTicket` of a jobs row."""
    return JobTicket(
        row["id"],
        row["client"],
        row["method"],
        row["epochs"],
        row["pixels"],
        frozenset(row["fast_styles"]),
    )


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
        extra = dict(record or {})
        names = "".join(f", {name}" for name in extra)
        values = "".join(f", ${9 + i}" for i in range(len(extra)))
        async with self.pool.acquire() as conn, conn.transaction():
            if max_open is not None:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", job.client)
                open_now = await conn.fetchval(
                    "SELECT count(*) FROM jobs WHERE client = $1"
                    " AND state IN ('queued', 'running')",
                    job.client,
                )
                if open_now >= max_open:
                    raise TooManyRequests(
                        f"You already have {max_open} jobs queued or running; "
                        "wait for one to finish or cancel one."
                    )
            # One statement (a round trip counts): a client with nothing queued joins the
            # back of the rotation; the job joins the back of its client's queue.
            await conn.execute(
                "WITH c AS (INSERT INTO clients VALUES ($2, nextval('turns'))"
                " ON CONFLICT (client) DO UPDATE SET turn = nextval('turns') WHERE NOT EXISTS"
                " (SELECT 1 FROM jobs WHERE client = $2 AND state = 'queued')),"
                " j AS (INSERT INTO jobs (id, client, method, epochs, pixels, fast_styles,"
                f" state, place, wait_until{names}) VALUES ($1, $2, $3, $4, $5, $6, 'queued',"
                f" nextval('places'), $7{values}) ON CONFLICT (id) DO NOTHING)"
                " SELECT pg_notify($8, '')",
                job.id,
                job.client,
                job.method,
                job.epochs,
                job.pixels,
                sorted(job.fast_styles),
                now + self.timeouts.queue,
                CHANNEL,
                *extra.values(),
            )
        return await self.dispatch(now)

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
        # One fenced statement, no node lock: a finish never waits for a claim (claims
        # skip locked jobs, so none waits for a finish either); the slot it frees shows
        # in the next claim's count.
        done = await self.pool.fetchval(
            "UPDATE jobs SET state = 'done', result = $4, ended = $5 WHERE id = $1"
            " AND lease = $2 AND node = $3 AND state = 'running' RETURNING 1",
            job_id,
            lease,
            node,
            result,
            now,
        )
        if done is None:
            raise StaleLease(f"lease {lease} of job {job_id} on {node} is not current")
        return await self.dispatch(now)

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

    async def _claim(self, now: float) -> list[SendOffer]:
        """Claim jobs in fair order for this replica's nodes, one at a time to the least
        loaded node that can run the next, until no free slot has a job (one transaction:
        a round trip saved is a job/s gained)."""
        async with self.pool.acquire() as conn, conn.transaction():
            nodes = await conn.fetch(
                f"SELECT n.*, {_BUSY} AS busy, EXISTS (SELECT 1 FROM jobs WHERE state = 'queued'"
                " AND not_before <= $2) AS work FROM nodes n"
                " WHERE n.replica = $1 AND NOT n.draining ORDER BY n.name",
                self.replica,
                now,
            )
            if not any(n["busy"] < n["slots"] and n["work"] for n in nodes):
                return []  # no room or no work: no need to queue for the lock
            # Claims take turns: a statement orders by the turns it saw when it began, so
            # two replicas claiming at once could both serve the client first in line (one
            # of them a turn late). Under this lock each claim sees the one before it; the
            # row locks (SKIP LOCKED) keep claims from waiting on a finish or a cancel.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
            # Under the nodes' locks (taken in name order) their busy counts cannot change
            # behind our back: count again, then keep count here.
            busy = {
                r["name"]: r["busy"]
                for r in await conn.fetch(
                    f"SELECT n.name, {_BUSY} AS busy FROM nodes n WHERE n.replica = $1"
                    " AND NOT n.draining ORDER BY n.name FOR UPDATE",
                    self.replica,
                    now,
                )
            }
            free = {n["name"]: n for n in nodes if n["name"] in busy}
            started = {name: n["started"] for name, n in free.items()}
            offers: list[SendOffer] = []
            while free:
                order = sorted(
                    (n for n in free.values() if busy[n["name"]] < n["slots"]),
                    key=lambda n: (busy[n["name"]] / n["slots"], started[n["name"]], n["name"]),
                )
                offer = None
                for node in order:
                    offer = await self._claim_for(conn, node, now)
                    if offer is not None:
                        busy[node["name"]] += 1
                        started[node["name"]] += 1
                        break
                    del free[node["name"]]  # nothing it can run is queued
                if offer is None:
                    break
                offers.append(offer)
        return offers

    async def _claim_for(self, conn: Any, node: Any, now: float) -> SendOffer | None:
        """Lease the next job in fair order that `node` can run to it (None: none queued)."""
        pick = await self._pick(conn, node, now)
        if pick is None:
            return None
        spec = spec_of(pick)
        lease = self._lease_id()
        stall = self.timeouts.stall_limit(spec)
        await conn.execute(
            "WITH j AS (UPDATE jobs SET state = 'running', lease = $2, node = $3,"
            " replica = $4, lease_started = $5::float8, stall = $6::float8,"
            " silent_until = $5::float8 + $6::float8, deadline = $7, not_before = 0"
            " WHERE id = $1),"
            " c AS (UPDATE clients SET turn = nextval('turns') WHERE client = $8)"
            " UPDATE nodes SET started = started + 1 WHERE name = $3",
            spec.id,
            lease,
            node["name"],
            self.replica,
            now,
            stall,
            now + self.timeouts.run_limit(spec),
            spec.client,
        )
        return SendOffer(node["name"], spec.id, lease)

    async def _pick(self, conn: Any, node: Any, now: float) -> Any:
        """Lock the next job in fair order that `node` can run (None if there is none)."""
        args = (now, node["methods"], node["styles"], node["max_epochs"], node["max_pixels"])
        return await conn.fetchrow(_PICK, *args, node["name"])

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
