"""The public gallery: results people chose to share, and their moderation.

Sharing is opt-in, per job: at submit (`share=true`, taking effect when the job is done) or
later from the job view; the person may unshare at any time. An item shows the result and
its style (a painting or fast style by name; an uploaded style image only if the person
also chose `share_style`), never the photo.

Items live in tables of their own beside the jobs' (in `jobs.sqlite3`, on a connection of
their own), under ids of their own (random, not job ids): nothing in the gallery API leads
to a job, its photo or an unshared result. An item keeps its files (result, thumbnail,
style image) through `relay.disk.DiskUsage`, so they outlive the job's result TTL until
`--gallery-keep` or `--gallery-max` (oldest first) lets them go, and they count in the
disk cap like any file.

Moderation: a client's report counts once per item (and reports are rate-limited per
client); `--gallery-report-threshold` reports hide an item until an operator restores or
deletes it (`python -m relay gallery ...`). Hidden items are never listed nor served.

`ShowcaseStore` is the table (synchronous, also used by the command line). `Gallery` is
the relay's side: it makes thumbnails on the bounded decoder and answers the API, through
an async `GalleryTable`, so that the HTTP side reads the same whether the table is this
SQLite one (`LocalTable`, in `Showcase`: one relay, files kept through `DiskUsage`) or the
cluster's, in PostgreSQL (`relay.cluster.gallery`: every replica shares one gallery).
"""

import asyncio
import io
import logging
import secrets
import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from relay import gallery
from relay.blobs import BlobStore
from relay.cluster.blobs import Blobs
from relay.config import Config
from relay.decoding import Decoder
from relay.disk import DiskUsage
from relay.errors import BadRequest, Conflict, NotFound, TooManyRequests
from relay.model import JobRecord, JobState, iso
from relay.offload import off_loop
from relay.ratelimits import SlidingWindow

log = logging.getLogger(__name__)

PAGE_SIZE = 24
"""Items in one page of `GET /api/gallery`."""
THUMB_SIDE = 320
"""Longest side of a gallery thumbnail, in pixels."""
DATABASE = "jobs.sqlite3"
"""The gallery's tables live beside the jobs, in the database the disk cap already counts."""
OWNER = "(gallery)"
"""Whom the gallery's files are charged to in `DiskUsage` (no client key looks like it)."""
_KEY = "gallery:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    job_id       TEXT NOT NULL UNIQUE,
    method       TEXT NOT NULL,
    style        TEXT NOT NULL,
    result_file  TEXT NOT NULL,
    thumb_file   TEXT NOT NULL,
    style_file   TEXT,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    shared       REAL NOT NULL,
    reports      INTEGER NOT NULL DEFAULT 0,
    hidden       TEXT
);
CREATE INDEX IF NOT EXISTS items_shown ON items(hidden, seq);
CREATE INDEX IF NOT EXISTS items_style ON items(style, hidden, seq);
CREATE INDEX IF NOT EXISTS items_method ON items(method, hidden, seq);
CREATE TABLE IF NOT EXISTS pending (
    job_id       TEXT PRIMARY KEY,
    share_style  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    item         TEXT NOT NULL,
    client       TEXT NOT NULL,
    PRIMARY KEY (item, client)
);
"""
COLUMNS = (  # of the items table, in the order of `Item`'s fields
    *("id", "job_id", "method", "style", "result_file", "thumb_file", "style_file"),
    *("width", "height", "shared", "reports", "hidden"),
)


@dataclass(frozen=True)
class Item:
    """One shared result. `job_id` stays on the relay: no view shows it."""

    id: str
    job_id: str
    method: str
    style: str
    result_file: str
    thumb_file: str
    style_file: str | None
    width: int
    height: int
    shared: float
    reports: int = 0
    hidden: str | None = None
    """None while shown; why it is hidden ("reports", "operator") otherwise."""

    def files(self) -> list[str]:
        """The stored files this item keeps."""
        return [f for f in (self.result_file, self.thumb_file, self.style_file) if f]

    def view(self) -> dict[str, Any]:
        """The item as the public API shows it: no job id, no photo."""
        painting = gallery.find(self.style)
        if painting is not None:
            name: str | None = painting.title
        elif self.style.startswith("fast:"):
            name = self.style.removeprefix("fast:").replace("_", " ").replace("-", " ").title()
        else:
            name = None
        base = f"/api/gallery/{self.id}"
        return {
            "id": self.id,
            "method": self.method,
            "style": {"id": self.style, "name": name},
            "width": self.width,
            "height": self.height,
            "shared": iso(self.shared),
            "thumbnail_url": f"{base}/thumbnail",
            "image_url": f"{base}/image",
            "style_image_url": f"{base}/style" if self.style_file else None,
            "report_url": f"{base}/report",
        }


def _item(row: sqlite3.Row) -> Item:
    return Item(**{name: row[name] for name in COLUMNS})


class ShowcaseStore:
    """The gallery's table: items, shares waiting for their job, and reports.

    Every call is a short indexed query on the jobs' WAL database, run on the caller's thread
    (the event loop, like `relay.store`), committed at once: the command line may change the
    same file while the relay runs.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # A short wait for the lock: the command line may be writing the same file.
        self._db = sqlite3.connect(path, isolation_level=None, timeout=2.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # The relay checkpoints in a thread (`JobStore.checkpoint`), never on a commit here.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # ---- sharing ---------------------------------------------------------------------

    def want(self, job_id: str, share_style: bool) -> None:
        """Remember that this job is to be shared once it is done."""
        self._db.execute(
            "INSERT OR REPLACE INTO pending (job_id, share_style) VALUES (?, ?)",
            (job_id, int(share_style)),
        )

    def wanted(self, job_id: str) -> bool | None:
        """Whether the job waits to be shared: None if not, else its `share_style`."""
        row = self._db.execute("SELECT share_style FROM pending WHERE job_id = ?", (job_id,))
        found = row.fetchone()
        return None if found is None else bool(found[0])

    def add(self, item: Item, keep_at_most: int) -> list[Item]:
        """Store a new item (its job no longer waits); return the oldest items that left
        to keep at most `keep_at_most`."""
        values = [getattr(item, name) for name in COLUMNS]
        self._db.execute("BEGIN")
        try:
            self._db.execute(
                f"INSERT INTO items ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in COLUMNS)})",
                values,
            )
            self._db.execute("DELETE FROM pending WHERE job_id = ?", (item.job_id,))
            rows = self._db.execute(
                "SELECT * FROM items ORDER BY seq DESC LIMIT -1 OFFSET ?", (keep_at_most,)
            ).fetchall()
            gone = [_item(row) for row in rows]
            self._delete([i.id for i in gone])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return gone

    def insert_many(self, items: list[Item]) -> None:
        """Store items in bulk, with no cap applied (benchmarks and imports)."""
        marks = ", ".join("?" for _ in COLUMNS)
        sql = f"INSERT INTO items ({', '.join(COLUMNS)}) VALUES ({marks})"
        with self._db:
            self._db.executemany(sql, [[getattr(i, c) for c in COLUMNS] for i in items])

    def unshare(self, job_id: str) -> Item | None:
        """Withdraw the job from the gallery (shared or waiting); return the item it had."""
        item = self.by_job(job_id)
        self._db.execute("DELETE FROM pending WHERE job_id = ?", (job_id,))
        if item is not None:
            self._delete([item.id])
        return item

    def _delete(self, ids: list[str]) -> None:
        self._db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
        self._db.executemany("DELETE FROM reports WHERE item = ?", [(i,) for i in ids])

    # ---- reading ---------------------------------------------------------------------

    def get(self, item_id: str) -> Item | None:
        """An item by its gallery id, shown or hidden."""
        row = self._db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else _item(row)

    def by_job(self, job_id: str) -> Item | None:
        """The item a job was shared as, if any."""
        row = self._db.execute("SELECT * FROM items WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _item(row)

    def page(
        self, before: int | None, style: str | None = None, method: str | None = None
    ) -> tuple[list[Item], int | None]:
        """Shown items, newest first, older than the cursor `before`; and the next cursor."""
        where, args = ["hidden IS NULL"], list[Any]()
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        if style is not None:
            where.append("style = ?")
            args.append(style)
        if method is not None:
            where.append("method = ?")
            args.append(method)
        sql = f"SELECT * FROM items WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        rows = self._db.execute(sql, (*args, PAGE_SIZE + 1)).fetchall()
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return [_item(r) for r in rows], (rows[-1]["seq"] if more else None)

    def all(self) -> list[Item]:
        """Every item, newest first (operators)."""
        return [_item(r) for r in self._db.execute("SELECT * FROM items ORDER BY seq DESC")]

    def ids(self) -> set[str]:
        """The id of every item."""
        return {row[0] for row in self._db.execute("SELECT id FROM items")}

    def reported(self) -> list[Item]:
        """Items with reports or hidden, newest first (for /status)."""
        rows = self._db.execute(
            "SELECT * FROM items WHERE reports > 0 OR hidden IS NOT NULL ORDER BY seq DESC"
        )
        return [_item(r) for r in rows]

    def counts(self) -> tuple[int, int]:
        """(shown, hidden) items."""
        row = self._db.execute(
            "SELECT COUNT(*) - COUNT(hidden), COUNT(hidden) FROM items"
        ).fetchone()
        return int(row[0]), int(row[1])

    # ---- moderation ------------------------------------------------------------------

    def report(self, item_id: str, client: str, threshold: int) -> Item | None:
        """Count one client's report (once per client); hide the item at `threshold`."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO reports (item, client) VALUES (?, ?)", (item_id, client)
        )
        if cur.rowcount:
            self._db.execute(
                "UPDATE items SET reports = reports + 1, "
                "hidden = CASE WHEN hidden IS NULL AND reports + 1 >= ? THEN 'reports' "
                "ELSE hidden END WHERE id = ?",
                (threshold, item_id),
            )
        return self.get(item_id)

    def hide(self, item_id: str) -> bool:
        """Hide an item (an operator's decision); False if there is none."""
        cur = self._db.execute("UPDATE items SET hidden = 'operator' WHERE id = ?", (item_id,))
        return cur.rowcount > 0

    def restore(self, item_id: str) -> bool:
        """Show an item again, its reports reviewed (cleared); False if there is none."""
        cur = self._db.execute(
            "UPDATE items SET hidden = NULL, reports = 0 WHERE id = ?", (item_id,)
        )
        self._db.execute("DELETE FROM reports WHERE item = ?", (item_id,))
        return cur.rowcount > 0

    def delete(self, item_id: str) -> bool:
        """Remove an item for good (its files go at the relay's next sweep)."""
        found = self.get(item_id) is not None
        self._delete([item_id])
        return found

    def expire(self, shared_before: float) -> list[Item]:
        """Remove items shared before the given time; return them."""
        rows = self._db.execute("SELECT * FROM items WHERE shared < ?", (shared_before,))
        gone = [_item(r) for r in rows.fetchall()]
        self._delete([i.id for i in gone])
        return gone

    def forget_job(self, job_id: str) -> None:
        """The job ended without a result: it no longer waits to be shared."""
        self._db.execute("DELETE FROM pending WHERE job_id = ?", (job_id,))


def make_thumbnail(png: bytes) -> bytes:
    """A JPEG at most `THUMB_SIDE` pixels on the long side (blocking: on the decoder)."""
    with Image.open(io.BytesIO(png)) as img:
        small = img.convert("RGB")
    small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=82)
    return out.getvalue()


class GalleryTable(Protocol):
    """Where the gallery's items, waiting shares and reports live, as `Gallery` uses it:
    `LocalTable` (SQLite beside the jobs, one relay) or `relay.cluster.gallery.SharedTable`
    (PostgreSQL, every replica)."""

    async def want(self, job_id: str, share_style: bool) -> None:
        """Remember that this job is to be shared once it is done."""
        ...

    async def wanted(self, job_id: str) -> bool | None:
        """Whether the job waits to be shared: None if not, else its `share_style`."""
        ...

    async def sharing(self, job_id: str) -> tuple[str | None, bool]:
        """The job's gallery id (or None), and whether it waits to be shared."""
        ...

    async def publish(self, item: Item, keep_at_most: int) -> list[Item] | None:
        """Store the item if its job still waits to be shared (it waits no more); None if
        it does not (withdrawn meanwhile, or shared already), else the oldest items that
        left to keep at most `keep_at_most`."""
        ...

    async def unshare(self, job_id: str) -> Item | None:
        """Withdraw the job (shared or waiting); the item it had."""
        ...

    async def forget_job(self, job_id: str) -> None:
        """The job ended without a result: it no longer waits to be shared."""
        ...

    async def by_job(self, job_id: str) -> Item | None:
        """The item a job was shared as, if any."""
        ...

    async def get(self, item_id: str) -> Item | None:
        """An item by its gallery id, shown or hidden."""
        ...

    async def page(
        self, before: int | None, style: str | None, method: str | None
    ) -> tuple[list[Item], int | None]:
        """Shown items, newest first, older than the cursor `before`; and the next cursor."""
        ...

    async def take_report(self, client: str, now: float, per_hour: int) -> bool:
        """Count one report of this client's if it sent fewer than `per_hour` in the last
        hour; False (not counted) if not."""
        ...

    async def report(self, item_id: str, client: str, threshold: int) -> Item | None:
        """Count one client's report (once per client); hide the item at `threshold`."""
        ...

    async def expire(self, shared_before: float) -> list[Item]:
        """Remove items shared before the given time; return them."""
        ...

    async def counts(self) -> tuple[int, int]:
        """(shown, hidden) items."""
        ...

    async def reported(self) -> list[Item]:
        """Items with reports or hidden, newest first."""
        ...


class LocalTable:
    """`GalleryTable` on the relay's `ShowcaseStore` (quick indexed queries, run on the
    loop like `relay.store`) and an in-memory window of each client's reports."""

    def __init__(self, store: ShowcaseStore, reports_per_hour: int) -> None:
        self.store = store
        self.reports = SlidingWindow(reports_per_hour, 3600.0)

    async def want(self, job_id: str, share_style: bool) -> None:
        """See `GalleryTable.want`."""
        self.store.want(job_id, share_style)

    async def wanted(self, job_id: str) -> bool | None:
        """See `GalleryTable.wanted`."""
        return self.store.wanted(job_id)

    async def sharing(self, job_id: str) -> tuple[str | None, bool]:
        """See `GalleryTable.sharing`."""
        item = self.store.by_job(job_id)
        if item is not None:
            return item.id, False
        return None, self.store.wanted(job_id) is not None

    async def publish(self, item: Item, keep_at_most: int) -> list[Item] | None:
        """See `GalleryTable.publish`."""
        if self.store.wanted(item.job_id) is None:
            return None
        return self.store.add(item, keep_at_most)

    async def unshare(self, job_id: str) -> Item | None:
        """See `GalleryTable.unshare`."""
        return self.store.unshare(job_id)

    async def forget_job(self, job_id: str) -> None:
        """See `GalleryTable.forget_job`."""
        self.store.forget_job(job_id)

    async def by_job(self, job_id: str) -> Item | None:
        """See `GalleryTable.by_job`."""
        return self.store.by_job(job_id)

    async def get(self, item_id: str) -> Item | None:
        """See `GalleryTable.get`."""
        return self.store.get(item_id)

    async def page(
        self, before: int | None, style: str | None, method: str | None
    ) -> tuple[list[Item], int | None]:
        """See `GalleryTable.page`."""
        return self.store.page(before, style, method)

    async def take_report(self, client: str, now: float, per_hour: int) -> bool:
        """See `GalleryTable.take_report`."""
        return self.reports.take(client, now, per_hour)

    async def report(self, item_id: str, client: str, threshold: int) -> Item | None:
        """See `GalleryTable.report`."""
        return self.store.report(item_id, client, threshold)

    async def expire(self, shared_before: float) -> list[Item]:
        """See `GalleryTable.expire`."""
        return self.store.expire(shared_before)

    async def counts(self) -> tuple[int, int]:
        """See `GalleryTable.counts`."""
        return self.store.counts()

    async def reported(self) -> list[Item]:
        """See `GalleryTable.reported`."""
        return self.store.reported()


class Gallery:
    """The relay's gallery on its `table`: shares jobs when they are done (thumbnails made
    on the bounded decoder), answers the API, and lets items go when they expire, overflow
    or are withdrawn. Subclasses keep the items' files: `Showcase` (one relay) and
    `relay.cluster.gallery.SharedGallery`."""

    def __init__(
        self,
        config: Config,
        table: GalleryTable,
        blobs: Blobs,
        decoder: Decoder,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.table = table
        self.blobs = blobs
        self.decoder = decoder
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._publishing: set[str] = set()

    def close(self) -> None:
        """Stop (pending thumbnails are dropped: shared again on request)."""
        for task in self._tasks:
            task.cancel()

    # ---- the files (the subclass's) --------------------------------------------------

    def _keep(self, item: Item) -> None:
        """A new item's files are to stay while it does."""

    async def _let_go(self, items: list[Item], extra: Sequence[str] = ()) -> None:
        """These items left the gallery (and `extra` files, made for an item that was not
        stored): their files may go unless something else keeps them."""

    # ---- sharing ---------------------------------------------------------------------

    async def state(self, job_id: str) -> dict[str, Any]:
        """What the job view says about sharing: `shared` (wanted or done), `gallery_id`."""
        gallery_id, waiting = await self.table.sharing(job_id)
        return {"shared": gallery_id is not None or waiting, "gallery_id": gallery_id}

    async def want(self, job_id: str, share_style: bool) -> None:
        """Share the job once it is done (asked at submit)."""
        await self.table.want(job_id, share_style)

    async def share(self, job: JobRecord, share_style: bool) -> None:
        """Share a job: at once if it is done, else when it is (`job_ended`)."""
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            raise Conflict(f"The job {job.state}; it has no result to share.")
        if await self.table.by_job(job.id) is not None:
            return
        await self.table.want(job.id, share_style)
        if job.state is JobState.DONE:
            await self._publish(job, share_style)

    async def unshare(self, job_id: str) -> Item | None:
        """Withdraw the job from the gallery; the item it had (its files go: see the
        subclass)."""
        item = await self.table.unshare(job_id)
        if item is not None:
            await self._let_go([item])
            log.info("gallery item %s withdrawn by its owner", item.id)
        return item

    def job_ended(self, job: JobRecord) -> None:
        """A job ended: share it now if it was meant to be (a task: thumbnails take time)."""
        self._later(self._ended(job))

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ended(self, job: JobRecord) -> None:
        share_style = await self.table.wanted(job.id)
        if share_style is None:
            return
        if job.state is not JobState.DONE:
            await self.table.forget_job(job.id)
            return
        await self._publish(job, share_style)

    async def settled(self) -> None:
        """Wait for shares in progress (tests and orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _publish(self, job: JobRecord, share_style: bool) -> None:
        if job.result_file is None or job.id in self._publishing:
            return
        self._publishing.add(job.id)
        try:
            png = await off_loop(self.blobs.size(job.result_file), self.blobs.read, job.result_file)
            thumb = await self.decoder.run(job.pixels * 4, make_thumbnail, png)
            thumb_file = await off_loop(len(thumb), self.blobs.put, thumb)
        except OSError as exc:
            log.error("could not make the gallery thumbnail of a shared job: %s", exc)
            return
        finally:
            self._publishing.discard(job.id)
        gone: list[Item] | None = None
        try:
            uploads = any(s.id == "upload" for s in job.styles)
            item = Item(
                id=secrets.token_urlsafe(12),
                job_id=job.id,
                method=job.method,
                style=job.styles[0].id if job.styles else "",
                result_file=job.result_file,
                thumb_file=thumb_file,
                # Uploaded style images come first among a job's style files.
                style_file=job.style_files[0] if share_style and uploads else None,
                width=job.width,
                height=job.height,
                shared=self.clock(),
            )
            gone = await self.table.publish(item, self.config.gallery_max)
            if gone is not None:
                self._keep(item)
        finally:
            self.blobs.release([thumb_file])
        if gone is None:  # withdrawn meanwhile, or shared by another hand
            await self._let_go([], [thumb_file])
            return
        await self._let_go(gone)
        log.info("job shared in the gallery as item %s", item.id)

    # ---- the public side -------------------------------------------------------------

    async def page(
        self, cursor: str | None, style: str | None, method: str | None
    ) -> dict[str, Any]:
        """One page of shown items, newest first, and the cursor of the next (or None)."""
        before = None
        if cursor:
            if not cursor.isdigit() or len(cursor) > 18:
                raise BadRequest("The gallery cursor is not one this relay gave out.")
            before = int(cursor)
        items, after = await self.table.page(before, style or None, method or None)
        return {
            "items": [i.view() for i in items],
            "next_cursor": str(after) if after is not None else None,
        }

    async def shown(self, item_id: str) -> Item:
        """A shown item, or 404 (hidden and unknown items look the same)."""
        item = await self.table.get(item_id) if len(item_id) <= 64 else None
        if item is None or item.hidden is not None:
            raise NotFound("No such gallery item. It was withdrawn, hidden or has expired.")
        return item

    async def report(self, item_id: str, client: str) -> None:
        """A visitor reports an item (rate-limited per client, counted once per client)."""
        await self.shown(item_id)
        per_hour = self.config.gallery_reports_per_hour
        if not await self.table.take_report(client, self.clock(), per_hour):
            raise TooManyRequests(
                f"You have sent {per_hour} reports this hour; thank you. Try again later.",
                {"Retry-After": "3600"},
            )
        item = await self.table.report(item_id, client, self.config.gallery_report_threshold)
        if item is not None and item.hidden is not None:
            log.warning("gallery item %s hidden after %d reports", item.id, item.reports)

    async def counts(self) -> tuple[int, int]:
        """(shown, hidden) items (for /status)."""
        return await self.table.counts()

    async def reported(self) -> list[Item]:
        """Items with reports or hidden, newest first (for /status)."""
        return await self.table.reported()

    # ---- upkeep ----------------------------------------------------------------------

    async def sweep(self) -> int:
        """Drop items older than `--gallery-keep`; return how many expired."""
        gone = await self.table.expire(self.clock() - self.config.gallery_keep)
        await self._let_go(gone)
        return len(gone)


class Showcase(Gallery):
    """The gallery of one relay: its table beside the jobs (`ShowcaseStore`), its items'
    files kept through `relay.disk.DiskUsage` (so they count in the disk cap and go at the
    sweep after they are let go)."""

    def __init__(
        self,
        config: Config,
        blobs: BlobStore,
        usage: DiskUsage,
        decoder: Decoder,
        clock: Callable[[], float],
    ) -> None:
        self.store = ShowcaseStore(config.data_dir / DATABASE)
        super().__init__(
            config, LocalTable(self.store, config.gallery_reports_per_hour), blobs, decoder, clock
        )
        self.usage = usage
        self._kept: set[str] = set()
        for item in self.store.all():
            self._keep(item)

    def close(self) -> None:
        """Close the database (pending thumbnails are dropped: shared again on request)."""
        super().close()
        self.store.close()

    def job_ended(self, job: JobRecord) -> None:
        """See `Gallery.job_ended`; most jobs are not shared, and the table is at hand:
        no task for those."""
        if self.store.wanted(job.id) is not None:
            super().job_ended(job)

    def _keep(self, item: Item) -> None:
        self.usage.hold(_KEY + item.id, OWNER, item.files(), self.blobs.size)
        self._kept.add(item.id)

    async def _let_go(self, items: list[Item], extra: Sequence[str] = ()) -> None:
        # The files go at the next sweep's collection, unless something else keeps them.
        for item in items:
            self.usage.forget(_KEY + item.id)
            self._kept.discard(item.id)

    async def sweep(self) -> int:
        """Drop items older than `--gallery-keep`, and let go of the files of items removed
        elsewhere (the command line); return how many expired."""
        expired = await super().sweep()
        present = self.store.ids()
        for item_id in self._kept - present:
            self.usage.forget(_KEY + item_id)
            self._kept.discard(item_id)
        return expired
