"""Jobs in SQLite (standard library `sqlite3`), one row per job.

The calls are synchronous on the event loop on purpose: each is a primary-key read or a
one-row write on a WAL database with `synchronous=NORMAL`, which commits without an fsync.
A thread hand-off would cost more than the work and would let writes of one job reorder.
Large files never pass through here (see `relay.blobs`).

Writes are committed in groups: every write made during one turn of the event loop goes
into one transaction at the start of the next (a commit costs several times a write; see
bench/relay.py). `await committed()` waits for that commit, which is how a new job is
stored before its client hears 202. Reads commit what is pending first.

A write that cannot be committed (a full disk) is not lost quietly: an update waits in a
backlog, is tried again with the next commit (the service ticks every second), and `get`
shows it meanwhile, so the relay never answers from a row older than what it decided; a
new job (`add`) is the exception: its caller is told, and the job is not created.

The two slow things run in worker threads on connections of their own: checkpoints (which
fsync; automatic ones are off, so no commit on the loop ever pays for one) and the scan of
every job's files for the sweeper. WAL lets them read while the loop writes.
"""

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from relay.errors import StoreError
from relay.model import JobRecord, JobState, StyleChoice

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    client       TEXT NOT NULL,
    method       TEXT NOT NULL,
    styles       TEXT NOT NULL,
    style_files  TEXT NOT NULL,
    content_file TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    epochs       INTEGER NOT NULL,
    params       TEXT NOT NULL,
    email        TEXT,
    filename     TEXT,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    created      REAL NOT NULL,
    started      REAL,
    finished     REAL,
    node         TEXT,
    error        TEXT,
    result_file  TEXT,
    preview_file TEXT,
    email_status TEXT,
    partial_file TEXT,
    partial_epoch INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, finished);
"""
_COLUMNS = (
    *("id", "client", "method", "styles", "style_files", "content_file", "width", "height"),
    *("epochs", "params", "email", "filename", "state", "attempts", "created", "started"),
    *("finished", "node", "error", "result_file", "preview_file", "email_status"),
    *("partial_file", "partial_epoch"),
)
# Columns added after the first release, for databases made before them.
_ADDED = {"email_status": "TEXT", "partial_file": "TEXT", "partial_epoch": "INTEGER"}
_INSERT = f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_UPDATABLE = frozenset(_COLUMNS) - {"id", "client", "method", "styles", "style_files"}


def _encode(name: str, value: Any) -> Any:
    match name:
        case "styles":
            return json.dumps([[s.id, s.weight] for s in value])
        case "style_files":
            return json.dumps(list(value))
        case "params":
            return json.dumps(dict(value), sort_keys=True)
        case "state":
            return str(value)
    return value


def _row(job: JobRecord) -> list[Any]:
    return [_encode(name, getattr(job, name)) for name in _COLUMNS]


def _decode(row: sqlite3.Row) -> JobRecord:
    values = {name: row[name] for name in _COLUMNS}
    values["styles"] = tuple(StyleChoice(i, float(w)) for i, w in json.loads(row["styles"]))
    values["style_files"] = tuple(json.loads(row["style_files"]))
    values["params"] = json.loads(row["params"])
    values["state"] = JobState(row["state"])
    return JobRecord(**values)


@dataclass
class _Write:
    """One statement waiting for its commit."""

    sql: str
    params: list[Any]
    job_id: str
    record: JobRecord | None = None
    """An insert's job, shown by `get` while the insert waits in the backlog."""
    fields: dict[str, Any] | None = None
    """An update's changes, shown by `get` while the update waits in the backlog."""
    saved: "asyncio.Future[None] | None" = None
    """Set for `add`: its caller hears the outcome, and a failed write is not retried."""


class JobStore:
    """The jobs table: insert, read, update one job; recover after a restart; expire."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(_SCHEMA)
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, kind in _ADDED.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        self._pending: list[_Write] = []
        self._backlog: list[_Write] = []
        self._flush: asyncio.Handle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.failing: sqlite3.Error | None = None
        """Why the last commit failed, until one succeeds."""

    def _write(self, write: _Write) -> None:
        self._pending.append(write)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (tools, tests): commit at once
            self.commit()
            return
        if self._flush is None:
            self._flush = loop.call_soon(self.commit)

    def commit(self) -> None:
        """Commit every pending write (and any the backlog holds) in one transaction."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        batch = [*self._backlog, *self._pending]
        self._backlog, self._pending = [], []
        waiter, self._waiter = self._waiter, None
        failed = self._run(batch) if batch else []
        for write in batch:
            if write.saved is not None and not write.saved.done():
                error = next((exc for w, exc in failed if w is write), None)
                if error is None:
                    write.saved.set_result(None)
                else:
                    write.saved.set_exception(StoreError(f"the job was not stored: {error}"))
        for write, exc in failed:
            if write.saved is not None:
                continue
            if isinstance(exc, sqlite3.OperationalError):  # full, I/O, locked: try again
                self._backlog.append(write)
            else:
                log.error("dropped a change of job %s that cannot be stored: %s", write.job_id, exc)
        error = failed[0][1] if failed else None
        if error is not None and self.failing is None:
            log.error("could not store %d job change(s): %s", len(failed), error)
        elif error is None and self.failing is not None:
            log.warning("the database takes writes again (was: %s)", self.failing)
        if batch:
            self.failing = error
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _run(self, batch: list[_Write]) -> list[tuple[_Write, sqlite3.Error]]:
        """Execute the writes; return those that failed, each with its error."""
        try:
            if len(batch) == 1:  # a statement alone commits itself
                self._db.execute(batch[0].sql, batch[0].params)
            else:
                self._db.execute("BEGIN")
                for write in batch:
                    self._db.execute(write.sql, write.params)
                self._db.execute("COMMIT")
            return []
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if len(batch) == 1:
                return [(batch[0], exc)]
        # One at a time, so that a write that cannot be stored does not sink the others; a
        # job's later changes wait behind its failed one, so each job's changes land in order.
        failed: list[tuple[_Write, sqlite3.Error]] = []
        stuck: dict[str, sqlite3.Error] = {}
        for write in batch:
            if write.job_id in stuck:
                failed.append((write, stuck[write.job_id]))
                continue
            try:
                self._db.execute(write.sql, write.params)
            except sqlite3.Error as exc:
                failed.append((write, exc))
                stuck[write.job_id] = exc
        return failed

    @property
    def unsaved(self) -> list[str]:
        """Ids of jobs with changes the database has not taken yet."""
        return list(dict.fromkeys(w.job_id for w in self._backlog))

    async def committed(self) -> None:
        """Wait until every write made so far has been tried (see `unsaved` for failures)."""
        if not self._pending:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)

    def checkpoint(self) -> None:
        """Copy the WAL into the database file (blocking, fsyncs: call it in a thread)."""
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        """Commit what is pending and close the database."""
        self.commit()
        if self._backlog:
            # The trace of what is lost: after a restart these jobs are as last stored
            # (a job whose end was not stored is queued and runs again).
            log.error(
                "closing with %d job change(s) not stored (%s); job(s) %s are as last stored",
                len(self._backlog),
                self.failing,
                ", ".join(self.unsaved),
            )
        self._db.close()

    def insert(self, job: JobRecord) -> None:
        """Add a new job (a failed insert is retried, like an update)."""
        self._write(_Write(_INSERT, _row(job), job.id, record=job))

    async def add(self, job: JobRecord) -> None:
        """Add a new job and wait for its commit; StoreError if it could not be stored
        (then the job does not exist, and the write is not tried again)."""
        saved = asyncio.get_running_loop().create_future()
        self._write(_Write(_INSERT, _row(job), job.id, saved=saved))
        await saved

    def update(self, job_id: str, **fields: Any) -> None:
        """Change some fields of one job."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        sets = ", ".join(f"{name} = ?" for name in fields)
        values = [_encode(name, value) for name, value in fields.items()]
        sql = f"UPDATE jobs SET {sets} WHERE id = ?"
        self._write(_Write(sql, [*values, job_id], job_id, fields=fields))

    def get(self, job_id: str) -> JobRecord | None:
        """One job by id, or None; with any changes still waiting to be stored."""
        self.commit()
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        job = None if row is None else _decode(row)
        for write in self._backlog:
            if write.job_id != job_id:
                continue
            if write.record is not None:
                job = write.record
            elif job is not None and write.fields:
                job = replace(job, **write.fields)
        return job

    def recover(self) -> list[JobRecord]:
        """After a restart: running jobs become queued; return every queued job, oldest first."""
        self.commit()
        open_states = (str(JobState.QUEUED), str(JobState.RUNNING))
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY seq", open_states
        ).fetchall()
        with contextlib.suppress(sqlite3.OperationalError):  # a full disk: memory says it
            self._db.execute(
                "UPDATE jobs SET state = ?, node = NULL WHERE state = ?",
                (str(JobState.QUEUED), str(JobState.RUNNING)),
            )
        return [replace(_decode(row), state=JobState.QUEUED, node=None) for row in rows]

    def all(self) -> list[JobRecord]:
        """Every stored job (at start-up, to count what each client keeps on disk)."""
        self.commit()
        return [_decode(row) for row in self._db.execute("SELECT * FROM jobs ORDER BY seq")]

    def unsent_mail(self) -> list[JobRecord]:
        """Ended jobs whose e-mail was still waiting to go out (after a restart)."""
        self.commit()
        rows = self._db.execute("SELECT * FROM jobs WHERE email_status = 'pending' ORDER BY seq")
        return [_decode(row) for row in rows]

    def mail_since(self, since: float) -> list[tuple[str, float]]:
        """(address, finish time) of each job that finished from `since` on and whose
        e-mail went out or was meant to (pending, sent or failed), oldest first."""
        self.commit()
        rows = self._db.execute(
            "SELECT email, finished FROM jobs WHERE email_status IN ('pending', 'sent', 'failed')"
            " AND email IS NOT NULL AND finished >= ? ORDER BY finished",
            (since,),
        )
        return [(row["email"], row["finished"]) for row in rows]

    def expired(self, finished_before: float) -> list[JobRecord]:
        """Final jobs that finished before the given time."""
        self.commit()
        finals = [str(s) for s in JobState if s.final]
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE state IN (?, ?, ?) AND finished < ?",
            (*finals, finished_before),
        )
        return [_decode(row) for row in rows]

    def delete(self, job_ids: Iterable[str]) -> None:
        """Remove jobs by id."""
        self.commit()
        self._db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in job_ids])

    def referenced_files(self) -> set[str]:
        """Every file digest some job still refers to (blocking: call it in a thread)."""
        refs: set[str] = set()
        query = (
            "SELECT content_file, style_files, result_file, preview_file, partial_file FROM jobs"
        )
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            for content, styles, result, preview, partial in db.execute(query):
                refs.add(content)
                refs.update(json.loads(styles))
                refs.update(r for r in (result, preview, partial) if r)
        return refs
