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

`ShowcaseStore` is the table (synchronous, also used by the command line); `Showcase` is
the relay's side: it makes thumbnails on the bounded decoder and keeps the files.
"""

import asyncio
import io
import logging
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from relay import gallery
from relay.blobs import BlobStore
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


class Showcase:
    """The relay's gallery: shares jobs when they are done, keeps the items' files, answers
    the API, and lets items go when they expire, overflow or are withdrawn."""

    def __init__(
        self,
        config: Config,
        blobs: BlobStore,
        usage: DiskUsage,
        decoder: Decoder,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.store = ShowcaseStore(config.data_dir / DATABASE)
        self.blobs = blobs
        self.usage = usage
        self.decoder = decoder
        self.clock = clock
        self.reports = SlidingWindow(config.gallery_reports_per_hour, 3600.0)
        self._kept: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._publishing: set[str] = set()
        for item in self.store.all():
            self._keep(item)

    def close(self) -> None:
        """Close the database (pending thumbnails are dropped: shared again on request)."""
        for task in self._tasks:
            task.cancel()
        self.store.close()

    # ---- sharing ---------------------------------------------------------------------

    def state(self, job_id: str) -> dict[str, Any]:
        """What the job view says about sharing: `shared` (wanted or done), `gallery_id`."""
        item = self.store.by_job(job_id)
        if item is not None:
            return {"shared": True, "gallery_id": item.id}
        return {"shared": self.store.wanted(job_id) is not None, "gallery_id": None}

    async def share(self, job: JobRecord, share_style: bool) -> None:
        """Share a job: at once if it is done, else when it is (`job_ended`)."""
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            raise Conflict(f"The job {job.state}; it has no result to share.")
        if self.store.by_job(job.id) is not None:
            return
        self.store.want(job.id, share_style)
        if job.state is JobState.DONE:
            await self._publish(job, share_style)

    def unshare(self, job_id: str) -> None:
        """Withdraw the job from the gallery; its files go at the next sweep."""
        item = self.store.unshare(job_id)
        if item is not None:
            self._let_go(item.id)
            log.info("gallery item %s withdrawn by its owner", item.id)

    def job_ended(self, job: JobRecord) -> None:
        """A job ended: share it now if it was meant to be (a task: thumbnails take time)."""
        share_style = self.store.wanted(job.id)
        if share_style is None:
            return
        if job.state is not JobState.DONE:
            self.store.forget_job(job.id)
            return
        task = asyncio.get_running_loop().create_task(self._publish(job, share_style))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        try:
            if self.store.wanted(job.id) is None:  # withdrawn meanwhile
                return
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
            gone = self.store.add(item, self.config.gallery_max)
            self._keep(item)
            for old in gone:
                self._let_go(old.id)
            log.info("job shared in the gallery as item %s", item.id)
        finally:
            self.blobs.release([thumb_file])

    def _keep(self, item: Item) -> None:
        self.usage.hold(_KEY + item.id, OWNER, item.files(), self.blobs.size)
        self._kept.add(item.id)

    def _let_go(self, item_id: str) -> None:
        self.usage.forget(_KEY + item_id)
        self._kept.discard(item_id)

    # ---- the public side -------------------------------------------------------------

    def page(self, cursor: str | None, style: str | None, method: str | None) -> dict[str, Any]:
        """One page of shown items, newest first, and the cursor of the next (or None)."""
        before = None
        if cursor:
            if not cursor.isdigit() or len(cursor) > 18:
                raise BadRequest("The gallery cursor is not one this relay gave out.")
            before = int(cursor)
        items, after = self.store.page(before, style or None, method or None)
        return {
            "items": [i.view() for i in items],
            "next_cursor": str(after) if after is not None else None,
        }

    def shown(self, item_id: str) -> Item:
        """A shown item, or 404 (hidden and unknown items look the same)."""
        item = self.store.get(item_id) if len(item_id) <= 64 else None
        if item is None or item.hidden is not None:
            raise NotFound("No such gallery item. It was withdrawn, hidden or has expired.")
        return item

    def report(self, item_id: str, client: str) -> None:
        """A visitor reports an item (rate-limited per client, counted once per client)."""
        self.shown(item_id)
        if not self.reports.take(client, self.clock()):
            raise TooManyRequests(
                f"You have sent {self.config.gallery_reports_per_hour} reports this hour; "
                "thank you. Try again later.",
                {"Retry-After": "3600"},
            )
        item = self.store.report(item_id, client, self.config.gallery_report_threshold)
        if item is not None and item.hidden is not None:
            log.warning("gallery item %s hidden after %d reports", item.id, item.reports)

    # ---- upkeep ----------------------------------------------------------------------

    def sweep(self) -> int:
        """Drop items older than `--gallery-keep`, and let go of the files of items removed
        elsewhere (the command line); return how many expired."""
        gone = self.store.expire(self.clock() - self.config.gallery_keep)
        for item in gone:
            self._let_go(item.id)
        present = self.store.ids()
        for item_id in self._kept - present:
            self._let_go(item_id)
        return len(gone)
