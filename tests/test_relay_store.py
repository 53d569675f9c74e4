"""Jobs in SQLite and files by digest: round trips, restart recovery, expiry."""

import hashlib
import sqlite3
from pathlib import Path

import pytest

from relay.blobs import BlobStore
from relay.model import JobRecord, JobState, StyleChoice
from relay.store import JobStore


def _job(job_id: str, created: float, **fields: object) -> JobRecord:
    base = JobRecord(
        id=job_id,
        client="10.0.0.1",
        method="gatys",
        styles=(StyleChoice("painting:udnie", 0.25), StyleChoice("upload", 0.75)),
        style_files=("a" * 64, "b" * 64),
        content_file="c" * 64,
        width=320,
        height=200,
        epochs=50,
        params={"size": 320, "keep_colors": True},
        email="me@example.org",
        filename="cat.png",
        created=created,
    )
    return JobRecord(**{**base.__dict__, **fields})


def test_round_trip_and_update(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    job = _job("j1", 100.0)
    store.insert(job)
    assert store.get("j1") == job
    store.update("j1", state=JobState.DONE, finished=130.0, result_file="d" * 64)
    done = store.get("j1")
    assert done is not None
    assert (done.state, done.finished, done.result_file) == (JobState.DONE, 130.0, "d" * 64)
    assert store.get("nope") is None
    with pytest.raises(ValueError, match="cannot update"):
        store.update("j1", client="someone else")


def test_recover_requeues_running_and_keeps_finished(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = JobStore(path)
    store.insert(_job("q1", 1.0))
    store.insert(_job("r1", 2.0, state=JobState.RUNNING, node="gpu", started=3.0))
    store.insert(_job("d1", 3.0, state=JobState.DONE, finished=5.0, result_file="e" * 64))
    store.insert(_job("q2", 4.0))
    store.close()
    again = JobStore(path)
    assert [j.id for j in again.recover()] == ["q1", "r1", "q2"]
    running = again.get("r1")
    assert running is not None
    assert (running.state, running.node) == (JobState.QUEUED, None)
    done = again.get("d1")
    assert done is not None
    assert (done.state, done.result_file) == (JobState.DONE, "e" * 64)


def test_a_database_from_before_email_status_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = JobStore(path)
    store.insert(_job("old", 1.0, state=JobState.DONE))
    store.close()
    with sqlite3.connect(path) as db:  # as the first release made it
        db.execute("ALTER TABLE jobs DROP COLUMN email_status")
    store = JobStore(path)
    old = store.get("old")
    assert old is not None and (old.state, old.email_status) == (JobState.DONE, None)
    store.insert(_job("new", 2.0, state=JobState.DONE))
    store.update("new", email_status="pending")
    assert [j.id for j in store.unsent_mail()] == ["new"]
    store.update("new", email_status="sent")
    assert store.unsent_mail() == []


def test_expired_only_finds_final_jobs_older_than_the_cut(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    store.insert(_job("old", 1.0, state=JobState.DONE, finished=10.0, result_file="e" * 64))
    store.insert(_job("new", 2.0, state=JobState.FAILED, finished=50.0))
    store.insert(_job("queued", 3.0))
    assert [j.id for j in store.expired(20.0)] == ["old"]
    store.delete(["old"])
    assert store.get("old") is None
    assert "e" * 64 not in store.referenced_files()
    assert {"a" * 64, "b" * 64, "c" * 64} <= store.referenced_files()


def test_blobs_are_named_by_digest_and_collected(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "files")
    sha = blobs.put(b"hello")
    assert sha == hashlib.sha256(b"hello").hexdigest()
    assert blobs.read(sha) == b"hello"
    assert blobs.put(b"hello") == sha
    other = blobs.put(b"other")
    # Spare files still held by their writer, and those a live job keeps.
    young = blobs.put(b"young")
    blobs.release([sha, sha, other])
    assert blobs.collect({sha}) == 1
    assert blobs.exists(sha)
    assert blobs.exists(young)
    assert not blobs.exists(other)
    assert blobs.total == len(b"hello") + len(b"young")
    assert BlobStore(tmp_path / "files").total == blobs.total  # counted again at start-up
    with pytest.raises(ValueError, match="not a sha256"):
        blobs.path("../../etc/passwd")


def test_checkpoint_moves_the_log_into_the_database_file(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    for i in range(200):
        store.insert(_job(f"j{i}", float(i)))
    wal = tmp_path / "jobs.db-wal"
    before = (tmp_path / "jobs.db").stat().st_size
    assert wal.stat().st_size > before  # automatic checkpoints are off: all still in the log
    store.checkpoint()
    assert (tmp_path / "jobs.db").stat().st_size > before
    assert len(store.recover()) == 200


async def test_writes_of_one_loop_turn_share_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = JobStore(path)
    for i in range(3):
        store.insert(_job(f"j{i}", float(i)))
    other = JobStore(path)  # a second connection sees only what is committed
    assert [j.id for j in other.recover()] == []
    await store.committed()
    assert [j.id for j in other.recover()] == ["j0", "j1", "j2"]
    store.update("j0", error="x")
    assert store.get("j0") is not None  # a read commits what is pending first
    assert other.get("j0").error == "x"  # type: ignore[union-attr]
