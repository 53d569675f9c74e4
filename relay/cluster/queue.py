"""The cluster's shared queue and job records, as the replicas' job services use them.

Each replica keeps its own `relay.scheduler.Scheduler` for the nodes connected to it (so
probation, rests, live slots and leases to nodes work as on one relay), and that scheduler
only ever holds jobs the replica *claimed* from here: when its nodes have free slots
(`Scheduler.room`), it takes the next jobs in fair order that those nodes can run.

- Fair across clients and replicas: a claim takes jobs by client turn (round-robin, as
  `relay.cluster.dispatcher`), `FOR UPDATE … SKIP LOCKED`, claims taking turns under the
  dispatcher's advisory lock, so two replicas never claim one job nor serve a client
  twice in a row out of turn.
- Fenced: a claim writes a new lease id and this replica's id on the row; whatever the
  replica later records of the job (running on a node, requeued, ended) is one UPDATE
  that holds only while that lease is the row's, so a replica that lost its claim (the
  others thought it dead and requeued the job) records nothing, and a result is recorded
  once.
- A replica that dies leaves its claims on rows naming it: the leader requeues them
  without charging an attempt (`relay.cluster.replicas.reap`).
"""

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.cluster.database import RETRY_FOR, retrying
from relay.cluster.dispatcher import CHANNEL, CLAIM_LOCK
from relay.cluster.gallery import gallery_files
from relay.cluster.records import COLUMNS, SELECT, insert_columns, record_of
from relay.dispatch import NodeInfo, Timeouts, no_room_to_wait
from relay.errors import QueueFull, TooManyRequests
from relay.model import JobRecord, fast_styles

RATE_LIMITED = 1000
"""`stylerelay_queue_submit` answers this plus the seconds to wait when over the rate."""
NO_ROOM_TO_WAIT = 1_000_000
"""... and this plus the jobs no node could run that wait, when those have their share."""
CONTROL = "stylerelay_control"
"""NOTIFY channel for one replica's ears: cancel a job that runs on one of its nodes."""


@dataclass(frozen=True)
class Claim:
    """A job this replica took from the shared queue, under `lease`."""

    job: JobRecord
    lease: str


class ClusterQueue:
    """The shared `jobs` table as one replica's job service sees it (module docstring)."""

    def __init__(
        self, pool: Any, replica: str, timeouts: Timeouts, retry_for: float = RETRY_FOR
    ) -> None:
        self.pool = pool
        self.replica = replica
        self.timeouts = timeouts
        self.retry_for = retry_for

    async def _run(self, sql: str, *args: Any) -> Any:
        return await retrying(lambda: self.pool.fetchval(sql, *args), self.retry_for)

    # ---- reads -----------------------------------------------------------------------

    async def fetch(self, job_id: str, retry_for: float | None = None) -> JobRecord | None:
        """A job's record, or None; `retry_for` seconds of retries if not the usual."""
        row = await retrying(
            lambda: self.pool.fetchrow(f"{SELECT} WHERE id = $1", job_id),
            self.retry_for if retry_for is None else retry_for,
        )
        return None if row is None else record_of(row)

    async def position(self, job: JobRecord) -> int | None:
        """1 + the queued jobs served before this queued one (its client's earlier jobs,
        and one per client whose turn comes first, for each of its own ahead), or None."""
        row = await retrying(
            lambda: self.pool.fetchrow(
                "SELECT j.place, c.turn FROM jobs j JOIN clients c USING (client)"
                " WHERE j.id = $1 AND j.state = 'queued'",
                job.id,
            ),
            self.retry_for,
        )
        if row is None:
            return None
        ahead: int = await self._run(
            "SELECT count(*) FROM jobs WHERE state = 'queued' AND client = $1 AND place < $2",
            job.client,
            row["place"],
        )
        # Round-robin: each other client with work gets up to `ahead + 1` jobs first if
        # its turn comes earlier, `ahead` if later.
        others: int = await self._run(
            "SELECT coalesce(sum(least(n, $3 + CASE WHEN turn < $2 THEN 1 ELSE 0 END)), 0)"
            " FROM (SELECT j.client, count(*) AS n, min(c.turn) AS turn FROM jobs j"
            " JOIN clients c USING (client) WHERE j.state = 'queued' AND j.client <> $1"
            " GROUP BY j.client) q",
            job.client,
            row["turn"],
            ahead,
        )
        return 1 + ahead + int(others)

    async def counts(self) -> tuple[int, int]:
        """(queued, running) jobs in the whole cluster."""
        row = await retrying(
            lambda: self.pool.fetchrow(
                "SELECT count(*) FILTER (WHERE state = 'queued') AS queued,"
                " count(*) FILTER (WHERE state = 'running') AS running FROM jobs"
                " WHERE state IN ('queued', 'running')"
            ),
            self.retry_for,
        )
        return row["queued"], row["running"]

    async def live_files(self) -> set[str]:
        """Every file a job row or a gallery item still names (the leader's garbage
        collection keeps them)."""
        rows = await retrying(
            lambda: self.pool.fetch(
                "SELECT content_file, style_files, result, preview_file, partial_file FROM jobs"
            ),
            self.retry_for,
        )
        live: set[str] = set()
        for row in rows:
            live.add(row["content_file"])
            live.update(row["style_files"])
            live.update(f for f in (row["result"], row["preview_file"], row["partial_file"]) if f)
        return live | await gallery_files(self.pool, self.retry_for)

    async def preview(self, job_id: str) -> tuple[bytes, int] | None:
        """The latest preview JPEG a running job's node sent (to any replica), and its number."""
        row = await retrying(
            lambda: self.pool.fetchrow("SELECT jpeg, n FROM previews WHERE job = $1", job_id),
            self.retry_for,
        )
        return None if row is None else (bytes(row["jpeg"]), row["n"])

    # ---- writes ----------------------------------------------------------------------

    async def submit(
        self,
        job: JobRecord,
        now: float,
        *,
        max_open: int,
        capacity: int,
        retry_after: int,
        per_minute: int,
        per_day: int | None = None,
        priority: int = 0,
        unfit: tuple[str, str] | None = None,
        unservable: int = 0,
        tell_others: bool = True,
        who: str = "your address",
    ) -> None:
        """Insert a new job at the back of its client's queue, within the client's cap on
        open jobs (429) and the cluster's queue capacity (503), both checked under the
        client's lock, which every replica takes (`stylerelay_queue_submit`: one round trip).
        Retried while the database is away (the id is inserted once); then
        `DatabaseUnavailable` (503). The client's new jobs a minute (`per_minute`, a
        token bucket) are counted across replicas too (429 with Retry-After; `who` names
        the client in the message), and so are an API key's jobs a day (`per_day`).
        `priority`: the client is served up to 1 + `priority` jobs a turn. `unfit`: why no
        node of the cluster could run the job (`relay.dispatch.unfit`), which then waits
        only while fewer than `unservable` such jobs do (503).
        `tell_others` False: this replica has a free slot that can run the job and claims
        at once (if it takes another job instead, its claim tells the others)."""
        record = insert_columns(job)
        outcome = await self._run(
            "SELECT stylerelay_queue_submit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
            " $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)",
            job.id,
            job.client,
            job.method,
            job.epochs,
            job.pixels,
            sorted(fast_styles(job.styles)),
            now + self.timeouts.queue,
            max_open,
            capacity,
            *record.values(),
            tell_others,
            per_minute,
            per_day,
            priority,
            unservable if unfit is not None else None,
        )
        _refuse(
            outcome,
            who=who,
            per_minute=per_minute,
            per_day=per_day,
            max_open=max_open,
            capacity=capacity,
            retry_after=retry_after,
            unfit=unfit,
        )

    async def check_room(
        self,
        client: str,
        now: float,
        *,
        max_open: int,
        capacity: int,
        retry_after: int,
        per_minute: int,
        unfit: tuple[str, str] | None = None,
        unservable: int = 0,
        who: str = "your address",
    ) -> None:
        """Refuse now, as `submit` would, a client over its rate or at its open-jobs cap,
        a full queue, or a job no node could run (`unfit`) when `unservable` such jobs
        wait: a job's images are then not stored only to be refused (one read; `submit`
        checks again under the client's lock)."""
        row = await retrying(
            lambda: self.pool.fetchrow(
                "SELECT (SELECT count(*) FROM jobs WHERE client = $1"
                " AND state IN ('queued', 'running')) AS mine,"
                " (SELECT count(*) FROM jobs WHERE state = 'queued') AS waiting,"
                " (SELECT count(*) FROM jobs WHERE state = 'queued' AND unservable) AS unfit,"
                " (SELECT least($3::float8, tokens + greatest(0, $2 - at) * $3 / 60.0)"
                " FROM rate_buckets WHERE client = $1) AS tokens",
                client,
                now,
                per_minute,
            ),
            self.retry_for,
        )
        outcome = 0
        if row["tokens"] is not None and row["tokens"] < 1:
            outcome = RATE_LIMITED + math.ceil((1 - row["tokens"]) * 60.0 / per_minute)
        elif row["mine"] >= max_open:
            outcome = 1
        elif row["waiting"] >= capacity:
            outcome = 2
        elif unfit is not None and row["unfit"] >= unservable:
            outcome = NO_ROOM_TO_WAIT + row["unfit"]
        _refuse(
            outcome,
            who=who,
            per_minute=per_minute,
            per_day=None,
            max_open=max_open,
            capacity=capacity,
            retry_after=retry_after,
            unfit=unfit,
        )

    async def claim(self, rooms: Iterable[tuple[NodeInfo, int]], now: float) -> list[Claim]:
        """Take, in fair order, up to each node's free slots of the queued jobs it could
        run (`stylerelay_queue_claim`: one round trip; see the module docstring)."""
        shown = [
            {
                "name": info.name,
                "free": free,
                "methods": sorted(info.methods),
                "styles": sorted(info.styles),
                "max_epochs": info.max_epochs,
                "max_pixels": info.max_pixels,
            }
            for info, free in rooms
            if free > 0
        ]
        if not shown:
            return []
        rows = await retrying(
            lambda: self.pool.fetch(
                "SELECT * FROM stylerelay_queue_claim($1, $2, $3, $4)",
                self.replica,
                now,
                json.dumps(shown),
                CLAIM_LOCK,
            ),
            self.retry_for,
        )
        return [Claim(record_of(row), row["lease"]) for row in rows]

    async def update(self, job_id: str, lease: str | None, fields: Mapping[str, Any]) -> bool:
        """Write record fields of a job (`started`, `node`, `partial_file`, ...); with a
        `lease`, only while it is the row's. Whether the row took them."""
        columns = _columns(fields)
        sets = ", ".join(f"{name} = ${3 + i}" for i, name in enumerate(columns))
        fence = "lease = $2" if lease is not None else "$2::text IS NULL"
        done = await self._run(
            f"UPDATE jobs SET {sets} WHERE id = $1 AND {fence} RETURNING 1",
            job_id,
            lease,
            *columns.values(),
        )
        return done is not None

    async def orphans(self, held: Iterable[str], before: float) -> list[tuple[str, str]]:
        """(job, lease) of the rows claimed for this replica before `before` that are not
        among the jobs it `held`."""
        rows = await retrying(
            lambda: self.pool.fetch(
                "SELECT id, lease FROM jobs WHERE replica = $1 AND state = 'running'"
                " AND lease_started < $2 AND NOT (id = ANY($3::text[]))",
                self.replica,
                before,
                list(held),
            ),
            self.retry_for,
        )
        return [(row["id"], row["lease"]) for row in rows]

    async def cancelled(self, held: Mapping[str, str]) -> list[str]:
        """Of the jobs this replica `held` (job: lease), those cancelled during that lease
        (through any replica)."""
        rows = await retrying(
            lambda: self.pool.fetch(
                "SELECT j.id FROM unnest($1::text[], $2::text[]) AS h(id, lease)"
                " JOIN jobs j ON j.id = h.id AND j.lease = h.lease WHERE j.state = 'cancelled'",
                list(held),
                list(held.values()),
            ),
            self.retry_for,
        )
        return [row["id"] for row in rows]

    async def requeue(
        self,
        job_id: str,
        lease: str,
        attempts: int | None,
        now: float,
        *,
        declined_by: str | None = None,
        pause: float = 0.0,
    ) -> bool:
        """Hand a claimed job back to the front of its client's queue (its node was lost,
        or this replica is stopping), with the attempts it has used (None: as the row
        says); `declined_by`: a node that refused it, to which no claim takes it again;
        `pause`: seconds before any claim takes it. False if the claim was no longer this
        replica's."""

        async def give_back() -> bool:
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "UPDATE jobs SET state = 'queued', place = -nextval('places'),"
                    " lease = NULL, node = NULL, replica = NULL,"
                    " attempts = coalesce($3, attempts),"
                    " wait_until = wait_until + ($4::float8 - coalesce(lease_started, $4)),"
                    " declined_by = CASE WHEN $5::text IS NULL THEN declined_by"
                    " ELSE array_append(declined_by, $5) END,"
                    " not_before = CASE WHEN $6 > 0 THEN $4::float8 + $6 ELSE 0 END"
                    " WHERE id = $1 AND lease = $2 AND state = 'running' RETURNING client",
                    job_id,
                    lease,
                    attempts,
                    now,
                    declined_by,
                    pause,
                )
                if row is None:
                    return False
                await conn.execute(
                    "UPDATE clients SET turn = (SELECT min(turn) - 1 FROM clients)"
                    " WHERE client = $1 AND NOT EXISTS"
                    " (SELECT 1 FROM jobs WHERE client = $1 AND state = 'queued')",
                    row["client"],
                )
                await conn.execute("DELETE FROM previews WHERE job = $1", job_id)
                await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
                return True

        result: bool = await retrying(give_back, self.retry_for)
        return result

    async def end(
        self, job_id: str, lease: str | None, state: str, now: float, fields: Mapping[str, Any]
    ) -> bool:
        """Record how a job ended. With this replica's `lease`: only while the row is
        running under it, or was cancelled (by a request to another replica) during it,
        in which case only the cancel's leftovers (the node, a checkpoint) are written and
        a result is not. Without one (a queued job): only while it is queued. Whether the
        row took it."""
        columns = _columns(fields)
        sets = "".join(f", {name} = ${5 + i}" for i, name in enumerate(columns))
        if lease is None:
            fence = "state = 'queued' AND $2::text IS NULL"
        elif state == "cancelled":
            fence = "lease = $2 AND state IN ('running', 'cancelled')"
        else:
            fence = "lease = $2 AND state = 'running'"
        done = await self._run(
            f"WITH e AS (UPDATE jobs SET state = $3, ended = coalesce(ended, $4){sets}"
            f" WHERE id = $1 AND {fence} RETURNING id),"
            " p AS (DELETE FROM previews WHERE job IN (SELECT id FROM e))"
            " SELECT count(*) FROM e",
            job_id,
            lease,
            state,
            now,
            *columns.values(),
        )
        return bool(done)

    async def cancel(self, job_id: str, now: float) -> tuple[str, str | None] | None:
        """Cancel a queued or running job wherever it is: (the state it had, the replica
        running it), or None if it had ended. The replica is told on `CONTROL`."""

        async def stop() -> tuple[str, str | None] | None:
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "SELECT state, replica FROM jobs WHERE id = $1 FOR UPDATE", job_id
                )
                if row is None or row["state"] not in ("queued", "running"):
                    return None
                await conn.execute(
                    "UPDATE jobs SET state = 'cancelled', ended = $2,"
                    " reason = 'Cancelled by request.' WHERE id = $1",
                    job_id,
                    now,
                )
                if row["replica"] is not None and row["state"] == "running":
                    await conn.execute(
                        "SELECT pg_notify($1, $2)", CONTROL, f"cancel {row['replica']} {job_id}"
                    )
                return row["state"], row["replica"]

        result: tuple[str, str | None] | None = await retrying(stop, self.retry_for)
        return result

    async def styles(self, offered: Iterable[str], now: float, keep: float) -> set[str]:
        """Note the fast styles this replica's nodes offer; every style some replica's
        node offered within `keep` seconds (a job may ask for those anywhere)."""
        rows = await retrying(
            lambda: self.pool.fetch(
                "WITH n AS (INSERT INTO catalogue SELECT unnest($1::text[]), $2"
                " ON CONFLICT (name) DO UPDATE SET seen = $2)"
                " SELECT name FROM catalogue WHERE seen >= $3",
                sorted(offered),
                now,
                now - keep,
            ),
            self.retry_for,
        )
        return {row["name"] for row in rows} | set(offered)

    async def mail_waiting(self, taken: Iterable[str], limit: int = 100) -> list[JobRecord]:
        """Ended jobs whose e-mail no one has sent yet, but those already `taken`."""
        rows = await retrying(
            lambda: self.pool.fetch(
                f"{SELECT} WHERE email_status = 'pending' AND NOT (id = ANY($1::text[]))"
                " ORDER BY ended LIMIT $2",
                list(taken),
                limit,
            ),
            self.retry_for,
        )
        return [record_of(row) for row in rows]

    async def mail_since(self, since: float) -> list[tuple[str, float]]:
        """(address, time) of every e-mail sent or meant to be since `since`."""
        rows = await retrying(
            lambda: self.pool.fetch(
                "SELECT email, ended FROM jobs WHERE email IS NOT NULL AND ended >= $1"
                " AND email_status IN ('pending', 'sent', 'failed') ORDER BY ended",
                since,
            ),
            self.retry_for,
        )
        return [(row["email"], row["ended"]) for row in rows]

    async def keep_preview(self, job_id: str, jpeg: bytes, n: int) -> None:
        """Keep a running job's latest preview where every replica can serve it."""
        await self._run(
            "INSERT INTO previews VALUES ($1, $2, $3) ON CONFLICT (job) DO UPDATE"
            " SET jpeg = $2, n = $3 RETURNING 1",
            job_id,
            jpeg,
            n,
        )

    async def forget_full_buckets(self, before: float) -> None:
        """Drop the rate buckets untouched since `before` (a minute idle refills one: a new
        bucket starts full anyway), so the table holds only active clients."""
        await self._run("DELETE FROM rate_buckets WHERE at < $1 RETURNING 1", before)

    async def forget_stale_previews(self) -> None:
        """Drop the previews of jobs no longer running: one written as its job ended (the
        ending deleted the row first), or left by a replica that died with the job."""
        await self._run(
            "WITH gone AS (DELETE FROM previews p WHERE NOT EXISTS (SELECT 1 FROM jobs j"
            " WHERE j.id = p.job AND j.state = 'running') RETURNING 1) SELECT count(*) FROM gone"
        )

    async def forget_old_days(self, before: float) -> None:
        """Drop the jobs a day counted before `before` (out of every key's day by then)."""
        await self._run("DELETE FROM daily_jobs WHERE at < $1 RETURNING 1", before)

    async def expire(self, before: float) -> list[JobRecord]:
        """Delete the ended jobs that ended before `before`; their records."""
        rows = await retrying(
            lambda: self.pool.fetch(
                f"DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled')"
                f" AND ended < $1 RETURNING {COLUMNS}",
                before,
            ),
            self.retry_for,
        )
        return [record_of(row) for row in rows]

    async def delete(self, job_id: str) -> bool:
        """Delete an ended job's row at its owner's request."""
        done = await self._run(
            "DELETE FROM jobs WHERE id = $1 AND state IN ('done', 'failed', 'cancelled')"
            " RETURNING 1",
            job_id,
        )
        return done is not None


_RECORD_COLUMNS = {
    "started": "lease_started",
    "finished": "ended",
    "error": "reason",
    "result_file": "result",
    "node": "node",
    "attempts": "attempts",
    "preview_file": "preview_file",
    "email_status": "email_status",
    "partial_file": "partial_file",
    "partial_epoch": "partial_epoch",
}


def _refuse(
    outcome: int,
    *,
    who: str,
    per_minute: int,
    per_day: int | None,
    max_open: int,
    capacity: int,
    retry_after: int,
    unfit: tuple[str, str] | None,
) -> None:
    """Raise the refusal `stylerelay_queue_submit`'s `outcome` stands for (0: none)."""
    if outcome >= NO_ROOM_TO_WAIT and unfit is not None:
        raise QueueFull(no_room_to_wait(*unfit, outcome - NO_ROOM_TO_WAIT), retry_after)
    if outcome >= RATE_LIMITED:
        seconds = max(1, outcome - RATE_LIMITED)
        raise TooManyRequests(
            f"Too many new jobs from {who} (limit {per_minute} a minute); "
            f"try again in {seconds} s.",
            {"Retry-After": str(seconds)},
        )
    if outcome == 1:
        raise TooManyRequests(
            f"You already have {max_open} jobs queued or running; "
            "wait for one to finish or cancel one."
        )
    if outcome == 3:
        raise TooManyRequests(
            f"Your key's {per_day} jobs a day are used up; try again in a few hours.",
            {"Retry-After": "3600"},
        )
    if outcome == 2:
        raise QueueFull(
            f"The queue is full ({capacity} jobs waiting); try again in {retry_after} s.",
            retry_after,
        )


def _columns(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Record fields as the row's column names (the state is written by the caller)."""
    return {_RECORD_COLUMNS[name]: value for name, value in fields.items() if name != "state"}


def wall() -> float:
    """The cluster's clock: wall time, which every replica's rows share (NTP)."""
    return time.time()
