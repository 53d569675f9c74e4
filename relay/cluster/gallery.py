"""The public gallery in cluster mode: one gallery for every replica, in PostgreSQL.

`relay.showcase.Gallery` does the sharing, listing and moderation as on one relay; here
are its table (`SharedTable`) and how its files are kept (`SharedGallery`):

- Items, shares waiting for their job, each client's reports and report times are rows
  every replica reads and writes, so any replica shares, lists, serves, reports and
  withdraws any item; the report threshold and each client's hourly report rate count
  across replicas (a client's reports take turns under an advisory lock).
- A share waiting for its job is published by whichever replica ends the job (or handles
  the share request): it makes the thumbnail, puts it in the shared store, and takes the
  waiting row in the same transaction that inserts the item, so a job is published once
  even when two replicas try, and a share withdrawn meanwhile stays withdrawn.
- The items' files stay while the items do: `gallery_files` is part of the live set
  (`relay.cluster.queue.ClusterQueue.live_files`) that the leader's expiry and any
  deletion spare. An item that leaves (withdrawn, deleted with its job, over
  `--gallery-max`, older than `--gallery-keep`) takes with it the files nothing else keeps.
- The leader (`relay.cluster.service.ClusterService.sweep`) lets old items go, forgets
  report times older than an hour, and settles shares no replica published: their job
  ended without a result, vanished, or ended done while nobody published it (the replica
  died making the thumbnail, or the share was written just as the job ended elsewhere).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from relay.cluster.blobs import Blobs
from relay.cluster.database import RETRY_FOR, DatabaseUnavailable, retrying
from relay.cluster.schema import MIGRATE_LOCK
from relay.config import Config
from relay.decoding import Decoder
from relay.model import JobRecord
from relay.showcase import COLUMNS, PAGE_SIZE, Gallery, Item

log = logging.getLogger(__name__)

GALLERY_SCHEMA = """
CREATE TABLE IF NOT EXISTS gallery_items (
    seq          bigserial PRIMARY KEY,
    id           text NOT NULL UNIQUE,
    job_id       text NOT NULL UNIQUE,
    method       text NOT NULL,
    style        text NOT NULL,
    result_file  text NOT NULL,
    thumb_file   text NOT NULL,
    style_file   text,
    width        integer NOT NULL,
    height       integer NOT NULL,
    shared       double precision NOT NULL,
    reports      integer NOT NULL DEFAULT 0,
    hidden       text
);
CREATE INDEX IF NOT EXISTS gallery_shown ON gallery_items (seq) WHERE hidden IS NULL;
CREATE INDEX IF NOT EXISTS gallery_style ON gallery_items (style, seq) WHERE hidden IS NULL;
CREATE INDEX IF NOT EXISTS gallery_method ON gallery_items (method, seq) WHERE hidden IS NULL;
CREATE INDEX IF NOT EXISTS gallery_age ON gallery_items (shared);
CREATE TABLE IF NOT EXISTS gallery_pending (
    job_id       text PRIMARY KEY,
    share_style  boolean NOT NULL,
    since        double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS gallery_reports (
    item         text NOT NULL,
    client       text NOT NULL,
    PRIMARY KEY (item, client)
);
CREATE TABLE IF NOT EXISTS gallery_report_times (
    client       text NOT NULL,
    at           double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS gallery_report_times_client ON gallery_report_times (client, at);
"""
SETTLE_AFTER = 30.0
"""Seconds after its job ended (or it was asked) that a share no replica published is the
leader's to settle: by then the replica that ended the job has published it or never will."""
SETTLE_BATCH = 100
"""Waiting shares the leader settles in one sweep."""
_REPORT_WINDOW = 3600.0
_ITEM = ", ".join(COLUMNS)


async def migrate_gallery(conn: Any) -> None:
    """Create the gallery's tables if missing (replicas starting together take turns)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
        await conn.execute(GALLERY_SCHEMA)


SHARING_KEPT = 2000
"""Jobs whose last sharing state a replica keeps for views while PostgreSQL is away."""


async def gallery_files(pool: Any, retry_for: float = RETRY_FOR) -> set[str]:
    """Every file a gallery item keeps (part of the cluster's live set)."""
    try:
        rows = await retrying(
            lambda: pool.fetch("SELECT result_file, thumb_file, style_file FROM gallery_items"),
            retry_for,
        )
    except asyncpg.UndefinedTableError:  # no replica has made the gallery's tables yet
        return set()
    return {sha for row in rows for sha in row if sha}


def _item(row: Any) -> Item:
    return Item(**{name: row[name] for name in COLUMNS})


class SharedTable:
    """`relay.showcase.GalleryTable` in PostgreSQL (module docstring). `clock` is the
    cluster's wall clock, which dates the waiting shares."""

    def __init__(self, pool: Any, clock: Callable[[], float], retry_for: float = RETRY_FOR) -> None:
        self.pool = pool
        self.clock = clock
        self.retry_for = retry_for
        self._sharing: dict[str, tuple[str | None, bool]] = {}
        """The last answer of `sharing` for recent jobs (kept for a database outage)."""

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await retrying(lambda: self.pool.fetch(sql, *args), self.retry_for)
        return rows

    async def _row(self, sql: str, *args: Any) -> Any:
        return await retrying(lambda: self.pool.fetchrow(sql, *args), self.retry_for)

    async def _in_transaction(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run `work(conn)` in one transaction, again whole if the connection was lost."""

        async def run() -> Any:
            async with self.pool.acquire() as conn, conn.transaction():
                return await work(conn)

        return await retrying(run, self.retry_for)

    # ---- sharing ---------------------------------------------------------------------

    async def want(self, job_id: str, share_style: bool) -> None:
        """See `GalleryTable.want`."""
        await self._row(
            "INSERT INTO gallery_pending (job_id, share_style, since) VALUES ($1, $2, $3)"
            " ON CONFLICT (job_id) DO UPDATE SET share_style = EXCLUDED.share_style",
            job_id,
            share_style,
            self.clock(),
        )

    async def wanted(self, job_id: str) -> bool | None:
        """See `GalleryTable.wanted`."""
        row = await self._row("SELECT share_style FROM gallery_pending WHERE job_id = $1", job_id)
        return None if row is None else bool(row[0])

    async def sharing(self, job_id: str) -> tuple[str | None, bool]:
        """See `GalleryTable.sharing` (one round trip: every job view asks). While the
        database is away, the last answer for the job (or not shared): a finished job's
        view is still answered then, and must not wait for the database."""
        try:
            row = await retrying(
                lambda: self.pool.fetchrow(
                    "SELECT (SELECT id FROM gallery_items WHERE job_id = $1),"
                    " EXISTS (SELECT 1 FROM gallery_pending WHERE job_id = $1)",
                    job_id,
                ),
                0.0,
            )
        except DatabaseUnavailable:
            return self._sharing.get(job_id, (None, False))
        answer = (row[0], False) if row[0] is not None else (None, bool(row[1]))
        self._sharing[job_id] = answer
        while len(self._sharing) > SHARING_KEPT:
            del self._sharing[next(iter(self._sharing))]
        return answer

    async def publish(self, item: Item, keep_at_most: int) -> list[Item] | None:
        """See `GalleryTable.publish`: the waiting row is taken in the transaction that
        inserts the item, so one replica publishes a job, and none after a withdrawal."""

        async def work(conn: Any) -> list[Item] | None:
            waited = await conn.fetchval(
                "DELETE FROM gallery_pending WHERE job_id = $1 RETURNING 1", item.job_id
            )
            if waited is None:
                return None
            marks = ", ".join(f"${n}" for n in range(1, len(COLUMNS) + 1))
            added = await conn.fetchval(
                f"INSERT INTO gallery_items ({_ITEM}) VALUES ({marks})"
                " ON CONFLICT DO NOTHING RETURNING seq",
                *(getattr(item, name) for name in COLUMNS),
            )
            if added is None:
                return None
            rows = await conn.fetch(
                f"DELETE FROM gallery_items WHERE seq IN (SELECT seq FROM gallery_items"
                f" ORDER BY seq DESC OFFSET $1) RETURNING {_ITEM}",
                keep_at_most,
            )
            gone = [_item(row) for row in rows]
            await _forget_reports(conn, gone)
            return gone

        found: list[Item] | None = await self._in_transaction(work)
        return found

    async def unshare(self, job_id: str) -> Item | None:
        """See `GalleryTable.unshare`."""

        async def work(conn: Any) -> Item | None:
            await conn.execute("DELETE FROM gallery_pending WHERE job_id = $1", job_id)
            return await _remove(conn, "job_id", job_id)

        found: Item | None = await self._in_transaction(work)
        return found

    async def forget_job(self, job_id: str) -> None:
        """See `GalleryTable.forget_job`."""
        await self._row("DELETE FROM gallery_pending WHERE job_id = $1", job_id)

    # ---- reading ---------------------------------------------------------------------

    async def by_job(self, job_id: str) -> Item | None:
        """See `GalleryTable.by_job`."""
        row = await self._row(f"SELECT {_ITEM} FROM gallery_items WHERE job_id = $1", job_id)
        return None if row is None else _item(row)

    async def get(self, item_id: str) -> Item | None:
        """See `GalleryTable.get`."""
        row = await self._row(f"SELECT {_ITEM} FROM gallery_items WHERE id = $1", item_id)
        return None if row is None else _item(row)

    async def page(
        self, before: int | None, style: str | None, method: str | None
    ) -> tuple[list[Item], int | None]:
        """See `GalleryTable.page`."""
        where, args = ["hidden IS NULL"], list[Any]()
        for column, value, test in (
            ("seq", before, "<"),
            ("style", style, "="),
            ("method", method, "="),
        ):
            if value is not None:
                args.append(value)
                where.append(f"{column} {test} ${len(args)}")
        args.append(PAGE_SIZE + 1)
        rows = await self._rows(
            f"SELECT seq, {_ITEM} FROM gallery_items WHERE {' AND '.join(where)}"
            f" ORDER BY seq DESC LIMIT ${len(args)}",
            *args,
        )
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return [_item(r) for r in rows], (rows[-1]["seq"] if more else None)

    async def counts(self) -> tuple[int, int]:
        """See `GalleryTable.counts`."""
        row = await self._row(
            "SELECT count(*) FILTER (WHERE hidden IS NULL),"
            " count(*) FILTER (WHERE hidden IS NOT NULL) FROM gallery_items"
        )
        return int(row[0]), int(row[1])

    async def reported(self) -> list[Item]:
        """See `GalleryTable.reported`."""
        rows = await self._rows(
            f"SELECT {_ITEM} FROM gallery_items WHERE reports > 0 OR hidden IS NOT NULL"
            " ORDER BY seq DESC"
        )
        return [_item(r) for r in rows]

    # ---- moderation ------------------------------------------------------------------

    async def take_report(self, client: str, now: float, per_hour: int) -> bool:
        """See `GalleryTable.take_report` (a client's reports take turns, whichever replica
        they reach, so none slips past the limit)."""

        async def work(conn: Any) -> bool:
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('gallery report ' || $1))", client
            )
            sent = await conn.fetchval(
                "SELECT count(*) FROM gallery_report_times WHERE client = $1 AND at > $2",
                client,
                now - _REPORT_WINDOW,
            )
            if sent >= per_hour:
                return False
            await conn.execute(
                "INSERT INTO gallery_report_times (client, at) VALUES ($1, $2)", client, now
            )
            return True

        taken: bool = await self._in_transaction(work)
        return taken

    async def report(self, item_id: str, client: str, threshold: int) -> Item | None:
        """See `GalleryTable.report`."""

        async def work(conn: Any) -> Item | None:
            new = await conn.fetchval(
                "INSERT INTO gallery_reports (item, client) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                item_id,
                client,
            )
            if new is None:
                row = await conn.fetchrow(
                    f"SELECT {_ITEM} FROM gallery_items WHERE id = $1", item_id
                )
            else:
                row = await conn.fetchrow(
                    "UPDATE gallery_items SET reports = reports + 1, hidden = CASE WHEN"
                    " hidden IS NULL AND reports + 1 >= $2 THEN 'reports' ELSE hidden END"
                    f" WHERE id = $1 RETURNING {_ITEM}",
                    item_id,
                    threshold,
                )
            return None if row is None else _item(row)

        found: Item | None = await self._in_transaction(work)
        return found

    # ---- the operator (`python -m relay gallery`) ------------------------------------

    async def all(self) -> list[Item]:
        """Every item, newest first."""
        return [
            _item(r)
            for r in await self._rows(f"SELECT {_ITEM} FROM gallery_items ORDER BY seq DESC")
        ]

    async def hide(self, item_id: str) -> bool:
        """Hide an item (an operator's decision); False if there is none."""
        row = await self._row(
            "UPDATE gallery_items SET hidden = 'operator' WHERE id = $1 RETURNING 1", item_id
        )
        return row is not None

    async def restore(self, item_id: str) -> bool:
        """Show an item again, its reports reviewed (cleared); False if there is none."""

        async def work(conn: Any) -> bool:
            await conn.execute("DELETE FROM gallery_reports WHERE item = $1", item_id)
            found = await conn.fetchval(
                "UPDATE gallery_items SET hidden = NULL, reports = 0 WHERE id = $1 RETURNING 1",
                item_id,
            )
            return found is not None

        restored: bool = await self._in_transaction(work)
        return restored

    async def delete(self, item_id: str) -> Item | None:
        """Remove an item for good; the item it was."""

        async def work(conn: Any) -> Item | None:
            return await _remove(conn, "id", item_id)

        found: Item | None = await self._in_transaction(work)
        return found

    # ---- upkeep (the leader) ---------------------------------------------------------

    async def expire(self, shared_before: float) -> list[Item]:
        """See `GalleryTable.expire`."""

        async def work(conn: Any) -> list[Item]:
            rows = await conn.fetch(
                f"DELETE FROM gallery_items WHERE shared < $1 RETURNING {_ITEM}", shared_before
            )
            gone = [_item(row) for row in rows]
            await _forget_reports(conn, gone)
            return gone

        found: list[Item] = await self._in_transaction(work)
        return found

    async def forget_report_times(self, before: float) -> None:
        """Forget report times too old to count against any client's hourly rate."""
        await self._row("DELETE FROM gallery_report_times WHERE at < $1", before)

    async def unsettled(self, before: float) -> list[tuple[str, str | None]]:
        """Waiting shares, asked before `before`, whose job ended before it or is gone:
        (job id, its state or None if gone), at most `SETTLE_BATCH`."""
        rows = await self._rows(
            "SELECT p.job_id, j.state FROM gallery_pending p LEFT JOIN jobs j ON j.id = p.job_id"
            " WHERE p.since < $1 AND (j.id IS NULL"
            " OR (j.state IN ('done', 'failed', 'cancelled') AND j.ended < $1))"
            " ORDER BY p.since LIMIT $2",
            before,
            SETTLE_BATCH,
        )
        return [(row["job_id"], row["state"]) for row in rows]


async def _remove(conn: Any, column: str, value: str) -> Item | None:
    """Delete the item whose `column` (`id` or `job_id`) is `value`, with its reports; the
    item it was, or None."""
    row = await conn.fetchrow(
        f"DELETE FROM gallery_items WHERE {column} = $1 RETURNING {_ITEM}", value
    )
    if row is None:
        return None
    item = _item(row)
    await _forget_reports(conn, [item])
    return item


async def _forget_reports(conn: Any, items: list[Item]) -> None:
    if items:
        await conn.execute(
            "DELETE FROM gallery_reports WHERE item = ANY($1)", [i.id for i in items]
        )


class SharedGallery(Gallery):
    """The gallery of a replica: on `SharedTable`, its files in the shared store, kept
    while a row names them (`live`, the cluster's live set); `fetch` reads any job."""

    def __init__(
        self,
        config: Config,
        pool: Any,
        blobs: Blobs,
        decoder: Decoder,
        clock: Callable[[], float],
        *,
        live: Callable[[], Awaitable[set[str]]],
        fetch: Callable[[str], Awaitable[JobRecord | None]],
    ) -> None:
        self.shared = SharedTable(pool, clock)
        super().__init__(config, self.shared, blobs, decoder, clock)
        self._live = live
        self._fetch = fetch

    async def _let_go(self, items: list[Item], extra: Sequence[str] = ()) -> None:
        # No sweep collects the shared store: what an item alone kept is deleted now.
        files = [sha for item in items for sha in item.files()] + list(extra)
        if not files:
            return
        try:
            live = await self._live()
            await asyncio.to_thread(self.blobs.discard, files, live)
        except Exception as exc:  # a file left behind, not an error to show anyone
            log.warning("could not delete the files of %d gallery item(s): %s", len(items), exc)

    async def want(self, job_id: str, share_style: bool) -> None:
        """Share the job once it is done; if it ended already (on another replica, before
        this was written), at once."""
        await super().want(job_id, share_style)
        job = await self._fetch(job_id)
        if job is not None and job.state.final:
            self.job_ended(job)

    async def sweep(self) -> int:
        """The leader's upkeep: old items go, old report times are forgotten, and shares
        no replica published are settled (module docstring); how many items expired."""
        now = self.clock()
        expired = await super().sweep()
        await self.shared.forget_report_times(now - _REPORT_WINDOW)
        for job_id, state in await self.shared.unsettled(now - SETTLE_AFTER):
            job = await self._fetch(job_id) if state == "done" else None
            if job is None:
                await self.table.forget_job(job_id)
                continue
            log.info("sharing job %s, which ended with nobody publishing it", job_id)
            await self._ended(job)
            if await self.table.wanted(job_id) is not None:  # could not: dropped, logged
                await self.table.forget_job(job_id)
        return expired


async def moderate(config: Config, verb: str, item_id: str | None) -> list[Item] | bool:
    """`python -m relay gallery VERB [ID]` on the cluster's gallery: `list` gives every
    item; hide, restore and delete whether there was such an item (a deleted item's files
    leave the shared store, unless a job or another item keeps them)."""
    from relay.cluster.blobs import open_blobs, parse_blob_url  # noqa: PLC0415
    from relay.cluster.member import timeouts_of  # noqa: PLC0415
    from relay.cluster.queue import ClusterQueue, wall  # noqa: PLC0415 (it imports this)

    assert config.database_url is not None and config.blob_url is not None
    pool = await asyncpg.create_pool(config.database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate_gallery(conn)
        table = SharedTable(pool, wall)
        match verb:
            case "list":
                return await table.all()
            case "hide":
                return await table.hide(str(item_id))
            case "restore":
                return await table.restore(str(item_id))
        item = await table.delete(str(item_id))
        if item is None:
            return False
        live = await ClusterQueue(pool, "operator", timeouts_of(config)).live_files()
        blobs = open_blobs(parse_blob_url(config.blob_url))
        await asyncio.to_thread(blobs.discard, item.files(), live)
        return True
    finally:
        await pool.close()
