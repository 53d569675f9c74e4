"""Probes of cluster mode by an outsider: what a client, or bad luck, could break by
talking to two replicas that one relay would not let it break."""

import asyncio
import io
import random
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cluster_replicas import CANDY, Replicas, service_of, until
from PIL import Image
from relay_harness import form, jpeg, png
from wire_relay import Relay, accept, result_for

from protocol import Cancel, Failure
from protocol.codes import FailureCode
from protocol.limits import MAX_TEXT_LEN
from relay.apikeys import KEYS
from relay.cluster.blobs import S3Store, SharedFolderStore
from relay.cluster.blobs import _client as s3_client
from relay.cluster.credentials import SharedKeys
from relay.ratelimits import Quota

asyncpg = pytest.importorskip("asyncpg", reason="pip install 'stylerelay[cluster]'")


async def _candy_known(*relays: Relay) -> None:
    """Every replica learns the fast style of a node that came and went (jobs may ask
    for it, and wait in the shared queue)."""
    node = await relays[0].node("gpu-x", styles=CANDY)
    for relay in relays:
        await until(partial(_knows_candy, relay))
    await node.close()


async def _knows_candy(relay: Relay) -> bool:
    return "builtin:candy" in service_of(relay).hub.known_fast


async def test_a_photo_sent_again_after_another_replica_deleted_it_is_stored_again(
    replicas: Replicas,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    await _candy_known(a, b)
    first = await b.job()
    assert (await b.client.delete(f"/api/jobs/{first}")).status == 200  # cancelled
    content = (await service_of(b).find(first)).content_file
    # Deleted through the other replica: the photo leaves the shared store.
    assert (await a.client.delete(f"/api/jobs/{first}")).status == 204
    # The same photo again, to the replica that stored it first.
    second = await b.job()
    job = await service_of(a).find(second)
    assert job.content_file == content
    assert service_of(a).shared.read(content)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_shared_folder_writes_again_a_file_another_replica_deleted(tmp_path: Path) -> None:
    mine, theirs = SharedFolderStore(tmp_path), SharedFolderStore(tmp_path)
    sha = mine.put(b"photo")
    mine.release([sha])
    assert theirs.discard([sha], live=set()) == 1
    assert mine.put(b"photo") == sha
    assert theirs.read(sha) == b"photo"


async def test_an_api_keys_jobs_a_day_count_across_replicas(replicas: Replicas) -> None:
    a, b = await replicas("a"), await replicas("b")
    await _candy_known(a, b)
    keys = a.client.app[KEYS]
    assert isinstance(keys, SharedKeys)
    key = await keys.add("app", Quota(max_open=10, per_day=2))
    await until(partial(_knows_key, b, key))
    answers = [await _post_with(relay, key) for relay in (a, b, a, b)]
    assert answers == [202, 202, 429, 429]


async def _knows_key(relay: Relay, key: str) -> bool:
    return relay.client.app[KEYS].verify(key) is not None


async def _post_with(relay: Relay, key: str) -> int:
    resp = await relay.client.post(
        "/api/jobs",
        data=form(png((64, 48)), style="fast:builtin:candy", size="40"),
        headers={"Authorization": f"Bearer {key}"},
    )
    return resp.status


def _noise_png(seed: int, side: int = 500) -> bytes:
    """A PNG that does not compress: its size is about its pixels' bytes."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.Random(seed).randbytes(side * side * 3)).save(
        out, format="PNG"
    )
    return out.getvalue()


async def test_a_replica_learns_that_files_another_deleted_left_the_store(
    replicas: Replicas,
) -> None:
    photos = [_noise_png(n) for n in range(2)]
    # The store may hold one and a half photos (and the replica's small local database):
    # the second fits once the first is gone.
    cap_gb = (1.5 * len(photos[0]) + 256 * 1024) / 1024**3
    a, b = await replicas("a", max_disk_gb=cap_gb), await replicas("b", max_disk_gb=cap_gb)
    await _candy_known(a, b)
    first = await _post(b, photos[0])
    assert first.status == 202, await first.text()
    job_id = (await first.json())["id"]
    assert (await b.client.delete(f"/api/jobs/{job_id}")).status == 200
    assert (await a.client.delete(f"/api/jobs/{job_id}")).status == 204
    for relay in (a, b):
        await service_of(relay).sweep()  # every replica is asked, leader or not
    second = await _post(b, photos[1])
    assert second.status == 202, await second.text()


def _post(relay: Relay, photo: bytes) -> Any:
    return relay.client.post("/api/jobs", data=form(photo, style="fast:builtin:candy", size="500"))


async def test_a_cancel_whose_notify_was_lost_still_stops_the_node(replicas: Replicas) -> None:
    a, b = await replicas("a"), await replicas("b")
    node = await b.node("gpu-b", styles=CANDY)
    await until(partial(_knows_candy, a))
    job_id = await a.job()
    offer = await accept(node)
    # Replica B stops hearing PostgreSQL for a moment (a network blip, a restart): the
    # cancel sent to A is not heard on B's ears when it is made.
    await service_of(b).listener.close()
    resp = await a.client.delete(f"/api/jobs/{job_id}")
    assert (await resp.json())["state"] == "cancelled"
    async with asyncio.timeout(5):  # well before the node's stall timeout (30 s)
        cancel = await node.expect(Cancel)
    assert (cancel.job_id, cancel.lease_id) == (job_id, offer.lease_id)


async def test_a_cancel_never_heard_while_listening_stops_the_node_within_ticks(
    replicas: Replicas, database_url: str
) -> None:
    b = await replicas("b")
    node = await b.node("gpu-b", styles=CANDY)
    job_id = await b.job()
    offer = await accept(node)
    # As `ClusterQueue.cancel` writes it, but its NOTIFY lost (one heard before the
    # claim's answer reached B finds no job there yet).
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE jobs SET state = 'cancelled', ended = $2 WHERE id = $1", job_id, time.time()
        )
    finally:
        await conn.close()
    async with asyncio.timeout(5):
        cancel = await node.expect(Cancel)
    assert (cancel.job_id, cancel.lease_id) == (job_id, offer.lease_id)
    assert (await b.state(job_id))["state"] == "cancelled"


async def test_a_failure_too_long_for_a_notify_reaches_a_websocket_on_another_replica(
    replicas: Replicas,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    node = await b.node("gpu-b", styles=CANDY)
    await until(partial(_knows_candy, a))
    job_id = await a.job()
    ws = await a.client.ws_connect(f"/api/jobs/{job_id}/events")
    offer = await accept(node)
    # The longest message the protocol lets a node send, escaped six-fold in JSON.
    reason = "é" * MAX_TEXT_LEN
    await node.send(Failure(job_id, offer.lease_id, FailureCode.INVALID_INPUT, reason))
    async with asyncio.timeout(10):
        events = [msg.json() async for msg in ws]
    assert events[-1]["type"] == "failed"
    assert events[-1]["job"]["state"] == "failed"
    assert (await a.state(job_id))["error"] == (await b.state(job_id))["error"]


async def test_a_job_offered_while_the_store_is_unreachable_waits_and_is_not_lost(
    replicas: Replicas, caplog: pytest.LogCaptureFixture, database_url: str
) -> None:
    a, b = await replicas("a"), await replicas("b")
    node = await b.node("gpu-b", styles=CANDY)
    await until(partial(_knows_candy, a))
    # SeaweedFS is unreachable from B for a moment (B does not have the photo in memory:
    # A took the upload).
    store = service_of(b).shared
    assert isinstance(store, S3Store)
    reachable = store._client
    store._client = s3_client(replace(store.location, endpoint="http://127.0.0.1:9"))
    try:
        job_id = await a.job()

        async def tried() -> bool:
            return "its stored images cannot be read" in caplog.text

        await until(tried)

        async def settled() -> dict[str, Any] | None:
            view = await a.state(job_id)
            return view if view["state"] != "running" else None

        view = await until(settled)
        assert (view["state"], view["attempts"]) == ("queued", 0), view
        # And it waits a while in the shared queue: every replica would fail to read it.
        conn = await asyncpg.connect(database_url)
        try:
            not_before = await conn.fetchval("SELECT not_before FROM jobs WHERE id = $1", job_id)
        finally:
            await conn.close()
        assert not_before > time.time() + 10
    finally:
        store._client = reachable
    await node.close()


async def test_an_api_keys_priority_holds_in_the_shared_queue(replicas: Replicas) -> None:
    a, b = await replicas("a"), await replicas("b")
    await _candy_known(a, b)
    keys = a.client.app[KEYS]
    assert isinstance(keys, SharedKeys)
    key = await keys.add("app", Quota(max_open=10, priority=2))
    await until(partial(_knows_key, b, key))
    anonymous = [await a.job()]
    keyed = [await _job_with(relay, key) for relay in (a, b, a)]
    anonymous += [await b.job(), await a.job()]
    node = await b.node("gpu-b", styles=CANDY)
    served = []
    for _ in range(6):
        offer = await accept(node)
        served.append(offer.job_id)
        await node.send(result_for(offer))
    # As on one relay: a client of priority 2 is served up to 3 jobs a turn.
    assert served == [anonymous[0], *keyed, *anonymous[1:]]


async def _job_with(relay: Relay, key: str) -> str:
    resp = await relay.client.post(
        "/api/jobs",
        data=form(png((64, 48)), style="fast:builtin:candy", size="40"),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert resp.status == 202, await resp.text()
    job_id: str = (await resp.json())["id"]
    return job_id


async def test_jobs_no_node_can_run_have_their_share_of_the_queue_across_replicas(
    replicas: Replicas,
) -> None:
    a = await replicas("a", queue_unservable=2)
    b = await replicas("b", queue_unservable=2)
    await _candy_known(a, b)
    for relay in (a, b):  # and no replica shows the node now (another's rows age out)
        await until(partial(_no_nodes, relay))
    answers = []
    stored = 0
    for n, relay in enumerate((a, b, a, b)):
        if n == 2:
            stored = service_of(a).shared.scan()
        resp = await relay.client.post(
            "/api/jobs",
            data=form(png((64, 48), (n, 0, 0)), style="fast:builtin:candy", size="40"),
            headers={"X-Forwarded-For": f"10.0.0.{n + 1}"},
        )
        answers.append((resp.status, (await resp.json()).get("error", "")))
    assert [status for status, _ in answers] == [202, 202, 503, 503]
    assert "No connected node can run this job now (no node is online)" in answers[2][1]
    assert "2 jobs already wait for one" in answers[3][1]
    assert service_of(a).shared.scan() == stored  # refused before their images were stored


async def test_a_preview_kept_after_its_job_ended_is_let_go_by_the_leader(
    replicas: Replicas, database_url: str
) -> None:
    b = await replicas("b")
    node = await b.node("gpu-b", styles=CANDY)
    job_id = await b.job()
    offer = await accept(node)
    await node.send(result_for(offer))
    await b.wait_for(job_id, "done")
    conn = await asyncpg.connect(database_url)
    try:
        # A preview write that lost the race with the job's ending (both in the background).
        await conn.execute("INSERT INTO previews VALUES ($1, $2, 1)", job_id, jpeg((32, 24)))
        service = service_of(b)
        await until(lambda: _leads(service))
        await service.sweep()
        left = await conn.fetchval("SELECT count(*) FROM previews")
    finally:
        await conn.close()
    assert left == 0


async def _leads(service: Any) -> bool:
    return bool(service.member.leader.leading)


async def _no_nodes(relay: Relay) -> bool:
    return not service_of(relay).hub.all_infos()


async def test_a_client_at_its_cap_on_another_replica_stores_nothing(replicas: Replicas) -> None:
    a = await replicas("a", max_open_jobs=1)
    b = await replicas("b", max_open_jobs=1)
    await _candy_known(a, b)
    assert (await _post(a, _noise_png(1, side=100))).status == 202
    stored = service_of(b).shared.scan()
    for seed in range(2, 5):
        resp = await _post(b, _noise_png(seed))
        assert resp.status == 429, await resp.text()
        assert "You already have 1 jobs queued or running" in (await resp.json())["error"]
    # Refused before its images went to the shared store (not left there for an hour).
    assert service_of(b).shared.scan() == stored


async def test_a_job_sent_while_the_store_is_unreachable_gets_a_503_that_names_no_address(
    replicas: Replicas,
) -> None:
    a = await replicas("a")
    await _candy_known(a)
    store = service_of(a).shared
    assert isinstance(store, S3Store)
    reachable = store._client
    store._client = s3_client(replace(store.location, endpoint="http://127.0.0.1:9"))
    try:
        resp = await _post(a, png((64, 48), (1, 2, 3)))
        body = await resp.json()
        # What a job's watchers may be told of a failed read (a requeue's reason) too.
        with pytest.raises(OSError) as failed:
            store.read("0" * 64)
        assert failed.value.strerror == "S3 read failed"
    finally:
        store._client = reachable
    assert resp.status == 503, body
    assert int(resp.headers["Retry-After"]) > 0
    assert "127.0.0.1" not in body["error"] and store.bucket not in body["error"]
    # Once it answers again, so does the relay.
    assert (await _post(a, png((64, 48), (1, 2, 3)))).status == 202
