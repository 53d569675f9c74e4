"""The public gallery in cluster mode: one gallery in PostgreSQL, shown, shared, reported
and let go through any replica; its files in the shared bucket (relay.cluster.gallery).

Real replicas (the app) on a throwaway PostgreSQL and SeaweedFS bucket, fake nodes over
the real protocol, as tests/test_cluster_relay.py."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from cluster_replicas import CANDY, Replicas, until
from wire_node import WireNode
from wire_relay import Relay, accept, result_for

from relay.api import SERVICE
from relay.cli import main as cli_main

pytest.importorskip("asyncpg", reason="pip install 'stylerelay[cluster]'")


async def _pair(replicas: Replicas, **changes: Any) -> tuple[Relay, Relay, WireNode]:
    """Replicas A and B (A leads: it started first), and a fast node on B that A knows of."""
    a, b = await replicas("a", **changes), await replicas("b", **changes)
    node = await b.node("gpu-b", styles=CANDY)

    async def a_knows_candy() -> bool:
        return "builtin:candy" in a.client.app[SERVICE].hub.known_fast

    await until(a_knows_candy)
    return a, b, node


async def _run(
    a: Relay, node: WireNode, color: tuple[int, int, int] = (250, 200, 10), **fields: str
) -> str:
    """A job posted to A, run by the node (on B) to a plain `color`; its id once A reads
    it done."""
    job_id = await a.job(**fields)
    offer = await accept(node)
    assert offer.job_id == job_id
    await node.send(result_for(offer, color))
    await a.wait_for(job_id, "done")
    return job_id


async def _items(relay: Relay) -> list[dict[str, Any]]:
    resp = await relay.client.get("/api/gallery")
    assert resp.status == 200, await resp.text()
    items: list[dict[str, Any]] = (await resp.json())["items"]
    return items


def _listed(relay: Relay, count: int) -> Any:
    """A check for `_until`: the replica lists `count` items (then they, or True if none)."""

    async def check() -> list[dict[str, Any]] | bool:
        items = await _items(relay)
        return (items or True) if len(items) == count else False

    return check


async def _fetch(relay: Relay, url: str) -> tuple[int, bytes]:
    resp = await relay.client.get(url)
    return resp.status, await resp.read()


async def test_a_job_shared_at_submit_shows_in_every_replicas_gallery(replicas: Replicas) -> None:
    a, b, node = await _pair(replicas)
    job_id = await _run(a, node, share="true")
    # B ended the job and made the thumbnail; A lists the item and serves its files.
    [item] = await until(_listed(a, 1))
    assert await _items(b) == [item]
    assert item["method"] == "fast" and item["style"]["id"] == "fast:builtin:candy"
    for relay in (a, b):
        status, body = await _fetch(relay, item["thumbnail_url"])
        assert status == 200 and body.startswith(b"\xff\xd8")
        status, body = await _fetch(relay, item["image_url"])
        assert status == 200 and body.startswith(b"\x89PNG")
        view = await relay.state(job_id)
        assert (view["shared"], view["gallery_id"]) == (True, item["id"])


async def test_shared_later_on_one_replica_and_withdrawn_on_another(replicas: Replicas) -> None:
    a, b, node = await _pair(replicas)
    job_id = await _run(a, node)
    assert await _items(b) == []
    # A makes the thumbnail of a job B's node ran.
    resp = await a.client.post(f"/api/jobs/{job_id}/share")
    assert resp.status == 200, await resp.text()
    [item] = await until(_listed(b, 1))
    assert (await resp.json())["gallery_id"] == item["id"]
    assert (await b.state(job_id))["gallery_id"] == item["id"]
    resp = await b.client.delete(f"/api/jobs/{job_id}/share")
    assert resp.status == 200
    assert (await resp.json())["shared"] is False
    assert await _items(a) == []
    assert (await _fetch(a, item["thumbnail_url"]))[0] == 404
    view = await a.state(job_id)
    assert (view["shared"], view["gallery_id"]) == (False, None)
    # The job keeps its own result.
    assert (await _fetch(a, view["result_url"]))[0] == 200


async def test_reports_from_clients_of_two_replicas_hide_an_item_together(
    replicas: Replicas,
) -> None:
    a, b, node = await _pair(replicas, gallery_report_threshold=2)
    await _run(a, node, share="true")
    [item] = await until(_listed(a, 1))

    async def report(relay: Relay, ip: str) -> int:
        headers = {"X-Forwarded-For": ip}
        return (await relay.client.post(item["report_url"], headers=headers)).status

    assert await report(a, "203.0.113.1") == 202
    assert await report(b, "203.0.113.1") == 202  # the same client on B: still one report
    assert len(await _items(b)) == 1
    assert await report(b, "203.0.113.2") == 202
    for relay in (a, b):
        assert await _items(relay) == []
        assert (await _fetch(relay, item["image_url"]))[0] == 404
    assert await report(a, "203.0.113.3") == 404


async def test_a_clients_report_rate_counts_on_every_replica(replicas: Replicas) -> None:
    a, b, node = await _pair(replicas, gallery_reports_per_hour=2, gallery_report_threshold=9)
    await _run(a, node, share="true")
    await _run(a, node, share="true")
    first, second = await until(_listed(a, 2))
    headers = {"X-Forwarded-For": "203.0.113.7"}
    assert (await a.client.post(first["report_url"], headers=headers)).status == 202
    assert (await b.client.post(second["report_url"], headers=headers)).status == 202
    resp = await a.client.post(second["report_url"], headers=headers)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "3600"
    other = {"X-Forwarded-For": "203.0.113.8"}
    assert (await b.client.post(first["report_url"], headers=other)).status == 202


async def test_the_owners_delete_takes_the_item_out_everywhere(replicas: Replicas) -> None:
    a, b, node = await _pair(replicas)
    job_id = await _run(a, node, share="true")
    [item] = await until(_listed(a, 1))
    files = await _files_of(a, job_id)
    assert all([await _stored(a, sha) for sha in files])
    assert (await b.client.delete(f"/api/jobs/{job_id}")).status == 204
    assert await _items(a) == []
    for url in (item["thumbnail_url"], item["image_url"]):
        assert (await _fetch(a, url))[0] == 404
    # Its files left the bucket too (the thumbnail with the job's).
    assert not any([await _stored(a, sha) for sha in files])


async def _files_of(relay: Relay, job_id: str) -> list[str]:
    """The stored files of the job's gallery item, as the shared table names them."""
    item = await relay.client.app[SERVICE].showcase.table.by_job(job_id)
    assert item is not None
    files: list[str] = item.files()
    return files


async def _stored(relay: Relay, sha: str) -> bool:
    found: bool = await asyncio.to_thread(relay.client.app[SERVICE].blobs.exists, sha)
    return found


async def test_the_gallery_keeps_a_shared_result_after_its_job_expired(replicas: Replicas) -> None:
    a, b, node = await _pair(replicas, result_ttl=1.0, sweep_interval=0.2)
    job_id = await _run(a, node, share="true")
    [item] = await until(_listed(b, 1))

    async def job_gone() -> bool:
        return (await a.client.get(f"/api/jobs/{job_id}")).status == 404

    await until(job_gone)  # the leader (A) swept it, with the files no one else keeps
    for relay in (a, b):
        for url in (item["thumbnail_url"], item["image_url"]):
            assert (await _fetch(relay, url))[0] == 200


async def test_the_leader_lets_old_items_go_and_the_cap_holds(replicas: Replicas) -> None:
    a, b, node = await _pair(replicas, gallery_max=1, gallery_keep=5.0, sweep_interval=0.2)
    first = await _run(a, node, (200, 10, 10), share="true")
    await until(_listed(b, 1))
    [_, thumb] = await _files_of(a, first)
    second = await _run(a, node, (10, 10, 200), share="true")

    async def only_second() -> bool:
        items = await _items(b)
        return [i["id"] for i in items] == [(await a.state(second))["gallery_id"]]

    await until(only_second)  # at most one item: the older left, and its thumbnail
    assert (await a.state(first))["gallery_id"] is None
    assert not await _stored(a, thumb)
    [item] = await _items(a)
    [result, thumb] = await _files_of(a, second)
    await until(_listed(b, 0))  # older than --gallery-keep: the leader let it go
    for relay in (a, b):
        assert (await _fetch(relay, item["thumbnail_url"]))[0] == 404
    assert not await _stored(a, thumb)
    assert await _stored(a, result)  # still the job's own result
    assert (await _fetch(b, (await b.state(second))["result_url"]))[0] == 200


async def test_the_operator_reviews_the_shared_gallery_from_the_command_line(
    replicas: Replicas, database_url: str, blob_url: str, tmp_path: Path, capsys: Any
) -> None:
    a, b, node = await _pair(replicas, gallery_report_threshold=1)
    job_id = await _run(a, node, share="true")
    [item] = await until(_listed(a, 1))
    files = await _files_of(a, job_id)
    headers = {"X-Forwarded-For": "203.0.113.9"}
    assert (await b.client.post(item["report_url"], headers=headers)).status == 202
    assert await _items(a) == []
    flags = ["--database-url", database_url, "--blob-url", blob_url]
    flags += ["--data-dir", str(tmp_path / "operator")]

    async def command(*words: str) -> int:
        status: int = await asyncio.to_thread(cli_main, [*flags, "gallery", *words])
        return status

    assert await command("list") == 0
    out = capsys.readouterr().out
    assert item["id"] in out and "hidden (reports)" in out and job_id not in out
    assert await command("restore", item["id"]) == 0
    assert [i["id"] for i in await _items(b)] == [item["id"]]
    assert await command("hide", item["id"]) == 0
    assert await _items(a) == []
    assert await command("delete", item["id"]) == 0
    assert await command("restore", item["id"]) == 2
    assert "no gallery item" in capsys.readouterr().err
    assert (await a.state(job_id))["gallery_id"] is None
    # The thumbnail left the store; the job keeps its own result.
    result, thumb = files
    assert not await _stored(a, thumb)
    assert await _stored(a, result)


async def test_the_leader_publishes_a_share_no_replica_published(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relay.cluster import gallery

    monkeypatch.setattr(gallery, "SETTLE_AFTER", 0.0)
    a, b, node = await _pair(replicas, sweep_interval=0.2)
    done = await _run(a, node)
    cancelled = await a.job(method="gatys", style="painting:starry_night", epochs="5")
    assert (await a.client.delete(f"/api/jobs/{cancelled}")).status == 200
    # Shares written as if their job had ended elsewhere just before (so no replica
    # published them): the leader does, or forgets the one that has no result.
    table = b.client.app[SERVICE].showcase.table
    await table.want(done, False)
    await table.want(cancelled, False)
    [item] = await until(_listed(b, 1))
    assert (await a.state(done))["gallery_id"] == item["id"]
    assert (await _fetch(b, item["thumbnail_url"]))[0] == 200

    async def forgotten() -> bool:
        return await table.wanted(cancelled) is None

    await until(forgotten)
    assert (await a.state(cancelled))["shared"] is False


async def test_a_job_ended_here_reads_ended_while_its_row_is_still_being_written(
    replicas: Replicas, database_url: str
) -> None:
    # Found by bench/cluster_relay.py: a POST ?wait whose job ended on the same replica
    # before the wait subscribed read the row (not yet written: the write was queued
    # behind other queries) as running, and waited out its 10 s for an ending already
    # told. Here the row is held by a lock, as a busy database would hold it.
    import asyncpg

    a = await replicas("a")
    node = await a.node("gpu-a", styles=CANDY)
    job_id = await a.job()
    offer = await accept(node)
    await a.wait_for(job_id, "running")
    holder = await asyncpg.connect(database_url)
    lock = holder.transaction()
    await lock.start()
    try:
        await holder.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job_id)
        await node.send(result_for(offer))
        service = a.client.app[SERVICE]

        async def ended_here() -> bool:
            return job_id not in service._open

        await until(ended_here)
        assert (await a.state(job_id))["state"] == "done"
        ws = await a.client.ws_connect(f"/api/jobs/{job_id}/events")
        first = await ws.receive_json(timeout=5)
        assert first["job"]["state"] == "done"
        await ws.close()
    finally:
        await lock.rollback()
        await holder.close()
