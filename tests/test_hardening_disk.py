"""The relay's disk (issue 11): inputs of ended jobs go at the next sweep, a per-client quota
and a global cap refuse new jobs, and a full disk neither invents nor loses jobs.

Full-disk tests put the data dir on a small tmpfs (which needs root) and fill it; a reader
that holds a snapshot of the database keeps SQLite from reusing its write-ahead log, so a
write needs fresh blocks and fails, as it does once a real disk fills up between checkpoints.
"""

import asyncio
import contextlib
import errno
import io
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from PIL import Image
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, make_config
from wire_node import WireNode

from protocol import Accept, Offer, Ping, Pong, Result, Welcome
from relay.api import SERVICE
from relay.app import NODE_LISTENER, init
from relay.blobs import BlobStore
from relay.jobs import JobService
from relay.reports import NodeReports
from relay.tokens import TokenStore

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]
MiB = 1024 * 1024


# ---- helpers -----------------------------------------------------------------------------


def noise(size: tuple[int, int] = (64, 48)) -> bytes:
    """A PNG of random pixels: it does not compress, so its size is about 3 bytes a pixel."""
    out = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(out, format="PNG")
    return out.getvalue()


def job_form(content: bytes, style_image: bytes | None = None, **fields: str) -> FormData:
    """A multipart job: the photo, an uploaded style image or the given text fields."""
    data = FormData()
    data.add_field("content", io.BytesIO(content), filename="p.png", content_type="image/png")
    if style_image is not None:
        data.add_field(
            "style_image", io.BytesIO(style_image), filename="s.png", content_type="image/png"
        )
        fields.setdefault("method", "arbitrary")
    else:
        fields.setdefault("style", "painting:starry_night")
    fields.setdefault("size", "64")
    for name, value in fields.items():
        data.add_field(name, value)
    return data


async def post(
    client: Client, content: bytes, *, address: str | None = None, **fields: Any
) -> tuple[int, dict[str, Any]]:
    headers = {"X-Forwarded-For": address} if address else None
    resp = await client.post("/api/jobs", data=job_form(content, **fields), headers=headers)
    body: dict[str, Any] = await resp.json()
    return resp.status, body


async def created(client: Client, content: bytes, **fields: Any) -> dict[str, Any]:
    status, body = await post(client, content, **fields)
    assert status == 202, body
    return body


def service(client: Client) -> JobService:
    return client.app[SERVICE]


def stored(client: Client) -> set[str]:
    """Digests of every file in the relay's blob dir."""
    root = service(client).blobs.root
    return {p.name for p in root.glob("??/*") if not p.name.endswith(".tmp")}


def files_of(client: Client, job_id: str) -> list[str]:
    return service(client).get(job_id).files()


def fill(directory: Path) -> Path:
    """Write a file into `directory` until its filesystem has no byte left; return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (MiB, 4096, 1):
            block = b"\0" * chunk
            while True:
                try:
                    if os.write(fd, block) < chunk:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return filler


@contextlib.contextmanager
def reader_snapshot(db: Path) -> Iterator[None]:
    """Hold a read transaction open, so that SQLite cannot restart its write-ahead log."""
    reader = sqlite3.connect(db)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM jobs").fetchone()
        yield
    finally:
        reader.close()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs to fill up (root only)."""
    if os.geteuid() != 0:
        pytest.skip("filling a real filesystem needs a tmpfs mount, and mounting needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start(aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock) -> Start:
    async def go(**changes: Any) -> Client:
        return await aiohttp_client(init(make_config(tmp_path, **changes), clock, clock))

    return go


# ---- inputs of ended jobs ----------------------------------------------------------------


async def test_inputs_of_cancelled_and_failed_jobs_go_at_the_next_sweep(start: Start) -> None:
    client = await start()
    svc = service(client)
    upload = await created(client, noise(), style_image=noise())
    painted = await created(client, noise())
    sharing = await created(client, noise())  # the same painting at the same size: one file
    shared = set(files_of(client, painted["id"])) & set(files_of(client, sharing["id"]))
    assert len(shared) == 1
    upload_files = files_of(client, upload["id"])
    painted_files = files_of(client, painted["id"])
    assert await (await client.get(upload["content_url"])).read()

    assert (await client.delete(f"/api/jobs/{upload['id']}")).status == 200
    assert (await client.delete(f"/api/jobs/{painted['id']}")).status == 200
    # Refused at once, not only after the sweep: the API does not serve them any more.
    resp = await client.get(upload["content_url"])
    assert resp.status == 404
    assert "deleted" in (await resp.json())["error"]
    assert (await client.get(upload["style_urls"][0])).status == 404
    await svc.sweep()
    on_disk = stored(client)
    assert not set(upload_files) & on_disk
    assert set(painted_files) & on_disk == shared  # still used by the queued job
    assert set(files_of(client, sharing["id"])) <= on_disk

    # A failed job's inputs go too; a done job keeps its inputs (the page shows them).
    node = FakeNode.connect(svc)
    offer = await node.offer()
    assert offer.job_id == sharing["id"]
    assert NodeReports(svc).failed(node.handle, offer.job_id, offer.lease, "broken", retry=False)
    done = await created(client, noise())
    finished = await node.offer()
    assert (await node.finish(finished))[0]
    await svc.sweep()
    on_disk = stored(client)
    assert svc.get(sharing["id"]).content_file not in on_disk
    assert set(files_of(client, done["id"])) <= on_disk  # with the painting it shared
    assert (await client.get(done["content_url"])).status == 200
    assert (await client.get(f"/api/jobs/{done['id']}/result")).status == 200
    assert on_disk == set(files_of(client, done["id"]))


def test_a_file_being_written_for_a_job_is_never_collected(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "files")
    held = blobs.put(b"for a job whose row is not written yet")
    loose = blobs.put(b"refused")
    blobs.release([loose])
    assert blobs.collect(set()) == 1
    assert blobs.exists(held) and not blobs.exists(loose)
    blobs.release([held])
    assert blobs.collect({held}) == 0
    assert blobs.collect(set()) == 1
    assert not blobs.exists(held)
    assert blobs.total == 0


# ---- quota and cap -----------------------------------------------------------------------


async def test_client_quota_refuses_with_429_and_spares_other_clients(start: Start) -> None:
    quota_mb = 0.1
    client = await start(client_quota_mb=quota_mb, trusted_proxy=("127.0.0.1/32",))
    svc = service(client)
    mine: list[str] = []
    refused: dict[str, Any] | None = None
    for _ in range(20):
        status, body = await post(client, noise((100, 75)), address="203.0.113.5", size="100")
        if status != 202:
            assert status == 429, body
            refused = body
            break
        mine.append(body["id"])
    assert refused is not None and mine
    assert "0.1 MB" in refused["error"] and "per client" in refused["error"]
    held = {f for job_id in mine for f in files_of(client, job_id)}
    held_bytes = sum(svc.blobs.path(f).stat().st_size for f in held)
    assert held_bytes <= quota_mb * MiB < held_bytes + 100 * 75 * 3
    # Someone else is not affected.
    status, other = await post(client, noise(), address="198.51.100.7")
    assert status == 202, other
    # Cancelling frees the quota at once; the refused upload's file goes at the next sweep.
    assert (await client.delete(f"/api/jobs/{mine[0]}")).status == 200
    status, body = await post(client, noise((100, 75)), address="203.0.113.5", size="100")
    assert status == 202, body
    await svc.sweep()
    live = {f for job_id in [*mine[1:], body["id"], other["id"]] for f in files_of(client, job_id)}
    assert stored(client) == live  # the refused upload and the cancelled photo are gone


async def test_global_cap_refuses_with_507_and_still_serves_results(start: Start) -> None:
    client = await start(max_disk_gb=0.5 / 1024)  # 512 KiB, of which the database is a part
    svc = service(client)
    node = FakeNode.connect(svc)
    first = await created(client, noise())
    assert (await node.finish(await node.offer()))[0]
    accepted = [first["id"]]
    refused: dict[str, Any] | None = None
    for _ in range(30):
        status, body = await post(client, noise((120, 90)), size="120")
        if status != 202:
            assert status == 507, body
            refused = body
            break
        accepted.append(body["id"])
    assert refused is not None and len(accepted) > 1
    assert "cannot take new jobs" in refused["error"]
    # Another client is refused too, and results are still served.
    status, body = await post(client, noise((120, 90)), size="120", address="198.51.100.7")
    assert status == 507
    result = await client.get(f"/api/jobs/{first['id']}/result")
    assert result.status == 200 and (await result.read()).startswith(b"\x89PNG")
    # Cancel every waiting job, sweep: room again.
    for job_id in accepted[1:]:
        with contextlib.suppress(Exception):
            await client.delete(f"/api/jobs/{job_id}")
    await svc.sweep()
    assert (await post(client, noise(), size="64"))[0] == 202


# ---- a full disk -------------------------------------------------------------------------


async def test_an_upload_that_cannot_be_written_is_refused_with_507(
    aiohttp_client: AiohttpClient, tiny_disk: Path, clock: FakeClock
) -> None:
    config = make_config(tiny_disk)
    client = await aiohttp_client(init(config, clock, clock))
    filler = fill(tiny_disk)
    status, body = await post(client, noise())
    assert status == 507, body
    assert "disk is full" in body["error"]
    health = await client.get("/healthz")
    assert health.status == 200
    assert await health.json() == {
        "status": "degraded",
        "disk": "full",
        "nodes": 0,
        "queued": 0,
        "running": 0,
    }
    node = FakeNode.connect(service(client))
    await asyncio.sleep(0)
    assert node.handle.outbox.empty()
    assert not [p for p in service(client).blobs.root.rglob("*") if p.is_file()]
    filler.unlink()
    await created(client, noise())
    assert (await (await client.get("/healthz")).json())["disk"] == "ok"


async def test_a_job_the_database_did_not_store_never_exists(
    aiohttp_client: AiohttpClient, tiny_disk: Path, clock: FakeClock
) -> None:
    config = make_config(tiny_disk)
    client = await aiohttp_client(init(config, clock, clock))
    photo = noise()
    first = await created(client, photo)
    filler = fill(tiny_disk)
    # The same photo and painting: the files are there already, only the row is new.
    with reader_snapshot(config.data_dir / "jobs.sqlite3"):
        status, body = await post(client, photo)
    assert status == 507, body
    assert "disk is full" in body["error"]
    health = await (await client.get("/healthz")).json()
    assert (health["disk"], health["queued"]) == ("full", 1)
    filler.unlink()
    node = FakeNode.connect(service(client))
    offer = await node.offer()
    assert offer.job_id == first["id"]
    assert (await node.finish(offer))[0]
    await asyncio.sleep(0)
    assert node.handle.outbox.empty()  # nothing else was queued
    assert (await (await client.get("/healthz")).json())["queued"] == 0


async def test_a_done_that_cannot_be_stored_stays_done_and_is_stored_later(
    aiohttp_client: AiohttpClient, tiny_disk: Path, clock: FakeClock
) -> None:
    config = make_config(tiny_disk)
    client = await aiohttp_client(init(config, clock, clock))
    job = await created(client, noise())
    svc = service(client)
    node = FakeNode.connect(svc)
    offer = await node.offer()
    filler = fill(tiny_disk)
    # The photo as the result: its file exists, so only the database write needs room.
    with reader_snapshot(config.data_dir / "jobs.sqlite3"):
        ok = await NodeReports(svc).result(
            node.handle,
            offer.job_id,
            offer.lease,
            offer.content_png,
            width=offer.width,
            height=offer.height,
        )
        assert ok
        body = await (await client.get(f"/api/jobs/{job['id']}")).json()
        assert body["state"] == "done"
        health = await (await client.get("/healthz")).json()
        assert health["disk"] == "full"
    result = await client.get(f"/api/jobs/{job['id']}/result")
    assert await result.read() == offer.content_png
    filler.unlink()
    svc.tick()  # the write is tried again
    assert (await (await client.get("/healthz")).json())["disk"] == "ok"
    await client.close()

    client = await aiohttp_client(init(config, clock, clock))
    body = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert body["state"] == "done"
    again = FakeNode.connect(service(client))
    await asyncio.sleep(0)
    assert again.handle.outbox.empty()


# ---- a result that cannot be stored, over a real node connection -------------------------


@pytest.fixture
async def wire_relay(
    aiohttp_client: AiohttpClient, tiny_disk: Path
) -> AsyncIterator[tuple[Client, WireNode]]:
    config = make_config(tiny_disk)
    client = await aiohttp_client(init(config, timer=FakeClock(1000.0)))
    token = TokenStore(config.data_dir).add("gpu-1")
    node = await WireNode.dial(client.app[NODE_LISTENER].port)
    await node.hello(token, "gpu-1")
    await node.expect(Welcome)
    yield client, node
    await node.close()


async def test_a_result_that_cannot_be_stored_requeues_without_an_attempt(
    wire_relay: tuple[Client, WireNode], tiny_disk: Path
) -> None:
    client, node = wire_relay
    job = await created(client, noise(), style="fast:builtin:candy", size="40")
    offer = await node.expect(Offer)
    await node.send(Accept(offer.job_id, offer.lease_id))
    with Image.open(io.BytesIO(offer.content)) as img:
        width, height = img.size
    result = noise((width, height))
    filler = fill(tiny_disk)
    await node.send(Result.for_png(offer.job_id, offer.lease_id, result, width, height))
    # The node is not at fault: it stays connected and the job waits, no attempt used.
    async with asyncio.timeout(5):
        while (body := await (await client.get(f"/api/jobs/{job['id']}")).json())[
            "state"
        ] != "queued":
            await asyncio.sleep(0.02)
    assert body["attempts"] == 0
    nodes = (await (await client.get("/api/nodes")).json())["nodes"]
    assert [n["name"] for n in nodes] == ["gpu-1"]
    filler.unlink()
    # Not at once (the same full disk would refuse it again), but after a pause.
    service = client.app[SERVICE]
    timer = service.timer
    assert isinstance(timer, FakeClock)
    service.tick()
    with pytest.raises(TimeoutError):
        await node.expect(Offer, timeout=0.3)
    timer.advance(service.scheduler.timeouts.not_stored_pause + 1)
    await node.send(Ping(7))  # heard after the jump, so the tick keeps the node
    await node.expect(Pong)
    service.tick()
    again = await node.expect(Offer)
    assert (again.job_id, again.lease_id != offer.lease_id) == (job["id"], True)
    await node.send(Accept(again.job_id, again.lease_id))
    await node.send(Result.for_png(again.job_id, again.lease_id, result, width, height))
    async with asyncio.timeout(5):
        while (await (await client.get(f"/api/jobs/{job['id']}")).json())["state"] != "done":
            await asyncio.sleep(0.02)
    assert await (await client.get(f"/api/jobs/{job['id']}/result")).read() == result


async def test_a_done_never_stored_is_named_at_shutdown_and_the_relay_restarts_full(
    aiohttp_client: AiohttpClient,
    tiny_disk: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(tiny_disk)
    client = await aiohttp_client(init(config, clock, clock))
    job = await created(client, noise())
    svc = service(client)
    node = FakeNode.connect(svc)
    offer = await node.offer()
    fill(tiny_disk)
    with reader_snapshot(config.data_dir / "jobs.sqlite3"):
        assert await NodeReports(svc).result(
            node.handle,
            offer.job_id,
            offer.lease,
            offer.content_png,
            width=offer.width,
            height=offer.height,
        )
        await client.close()
    assert f"job(s) {job['id']} are as last stored" in caplog.text

    # Still full: the relay starts anyway, serves what it has, and runs the job again.
    client = await aiohttp_client(init(config, clock, clock))
    body = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert body["state"] == "queued"
    assert (await (await client.get("/healthz")).json())["status"] in {"ok", "degraded"}
    again = FakeNode.connect(service(client))
    assert (await again.offer()).job_id == job["id"]


async def test_delete_now_on_a_full_disk_is_507_and_removes_nothing(
    aiohttp_client: AiohttpClient, tiny_disk: Path, clock: FakeClock
) -> None:
    config = make_config(tiny_disk)
    client = await aiohttp_client(init(config, clock, clock))
    job = await created(client, noise())
    svc = service(client)
    node = FakeNode.connect(svc)
    offer = await node.offer()
    assert (await node.finish(offer))[0]
    await svc.store.committed()
    filler = fill(tiny_disk)
    with reader_snapshot(config.data_dir / "jobs.sqlite3"):
        refused = await client.delete(f"/api/jobs/{job['id']}")
        assert refused.status == 507
        assert "could not be deleted now" in (await refused.json())["error"]
    # Nothing half-deleted: the job and its result are all still there.
    assert (await client.get(f"/api/jobs/{job['id']}/result")).status == 200
    filler.unlink()
    assert (await client.delete(f"/api/jobs/{job['id']}")).status == 204
    assert (await client.get(f"/api/jobs/{job['id']}")).status == 404
    await client.close()
