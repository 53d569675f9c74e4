"""Cluster mode end to end: relay replicas (the real app) on one throwaway PostgreSQL and a
SeaweedFS bucket, fake nodes over the real protocol. A job posted to one replica runs on
another's node; views, results, events and cancels work from any replica."""

import asyncio
import time
from typing import Any

import pytest
from cluster_replicas import CANDY, Replicas, service_of, until
from relay_harness import form, jpeg, png
from wire_relay import Relay, accept, result_for

from protocol import Cancel, Preview, Progress
from protocol.handshake import Pace
from relay.api import SERVICE

pytest.importorskip("asyncpg", reason="pip install 'stylerelay[cluster]'")


async def _knows_candy(relay: Relay) -> bool:
    """Whether the replica learnt, from the shared catalogue, the style another's node has."""
    known: set[str] = relay.client.app[SERVICE].hub.known_fast
    return "builtin:candy" in known


async def test_a_job_posted_to_one_replica_runs_on_a_node_of_another(replicas: Replicas) -> None:
    a, b = await replicas("a"), await replicas("b")
    node = await b.node("gpu-b", styles=CANDY)
    await until(lambda: _knows_candy(a))
    job_id = await a.job()
    offer = await accept(node)
    assert offer.job_id == job_id
    running = await a.wait_for(job_id, "running")
    assert running["node"] == "gpu-b"
    await node.send(result_for(offer))
    done = await a.wait_for(job_id, "done")
    assert (await b.state(job_id))["state"] == "done"
    # The result is in the shared bucket: either replica serves it.
    for relay in (a, b):
        resp = await relay.client.get(done["result_url"])
        assert resp.status == 200
        assert (await resp.read())[:8] == b"\x89PNG\r\n\x1a\n"


async def test_a_websocket_on_one_replica_follows_a_job_run_through_another(
    replicas: Replicas,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    node = await b.node("gpu-b", styles=CANDY)
    await until(lambda: _knows_candy(a))
    job_id = await a.job()
    ws = await a.client.ws_connect(f"/api/jobs/{job_id}/events")
    offer = await accept(node)
    for epoch in range(1, 6):
        await node.send(Progress(job_id, offer.lease_id, epoch, 5, {"style": 1.0}, 0.1))
    await node.send(result_for(offer))
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        async for msg in ws:
            seen.append(msg.json())
    types = [e["type"] for e in seen]
    assert types[0] == "state"
    assert [e["epoch"] for e in seen if e["type"] == "progress"] == [1, 2, 3, 4, 5]
    assert types[-1] == "done"
    assert seen[-1]["job"]["state"] == "done"


async def test_a_cancel_sent_to_one_replica_stops_the_node_on_another(replicas: Replicas) -> None:
    a, b = await replicas("a"), await replicas("b")
    node = await b.node("gpu-b", styles=CANDY)
    await until(lambda: _knows_candy(a))
    job_id = await a.job()
    offer = await accept(node)
    resp = await a.client.delete(f"/api/jobs/{job_id}")
    assert resp.status == 200
    assert (await resp.json())["state"] == "cancelled"
    cancel = await node.expect(Cancel)
    assert (cancel.job_id, cancel.lease_id) == (job_id, offer.lease_id)
    # A late result is not recorded.
    await node.send(result_for(offer))
    await asyncio.sleep(0.3)
    assert (await b.state(job_id))["state"] == "cancelled"
    assert (await a.state(job_id))["state"] == "cancelled"


async def test_a_job_whose_node_is_lost_runs_on_a_node_of_another_replica(
    replicas: Replicas,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    node_b = await b.node("gpu-b", styles=CANDY)
    await until(lambda: _knows_candy(a))
    job_id = await a.job()
    await accept(node_b)
    node_a = await a.node("gpu-a", styles=CANDY)
    await node_b.close()
    offer = await accept(node_a)
    assert offer.job_id == job_id
    await node_a.send(result_for(offer))
    done = await b.wait_for(job_id, "done")
    assert done["attempts"] == 1
    assert done["node"] == "gpu-a"


async def test_previews_of_a_running_job_are_served_by_every_replica(replicas: Replicas) -> None:
    a, b = await replicas("a"), await replicas("b")
    node = await b.node("gpu-b", styles=CANDY)
    await until(lambda: _knows_candy(a))
    job_id = await a.job()
    offer = await accept(node)
    await node.send(Preview(job_id, offer.lease_id, 1, jpeg((40, 30))))

    async def served() -> bool:
        resp = await a.client.get(f"/api/jobs/{job_id}/preview")
        body: bytes = await resp.read()
        return resp.status == 200 and body.startswith(b"\xff\xd8")

    assert await until(served)


async def test_the_open_jobs_cap_holds_across_replicas(replicas: Replicas) -> None:
    a, b = await replicas("a", max_open_jobs=3), await replicas("b", max_open_jobs=3)
    await b.node("gpu-b", styles=CANDY, slots=1)
    await until(lambda: _knows_candy(a))
    for relay in (a, b, a):
        await relay.job()
    for relay in (a, b):
        resp = await relay.client.post(
            "/api/jobs", data=form(png((64, 48)), style="fast:builtin:candy", size="40")
        )
        assert resp.status == 429, await resp.text()


async def test_every_replica_shows_every_nodes_styles_and_state(replicas: Replicas) -> None:
    a, b = await replicas("a"), await replicas("b")
    await b.node("gpu-b", styles=CANDY, slots=2)

    async def shown_on_a() -> list[dict[str, Any]]:
        return [n for n in await a.nodes() if n["name"] == "gpu-b"]

    (view,) = await until(shown_on_a)
    assert view["slots"] == 2
    assert view["styles"] == ["fast:builtin:candy"]
    styles = await (await a.client.get("/api/styles")).json()
    assert "fast:builtin:candy" in {s["id"] for s in styles["styles"]}
    fast = next(m for m in styles["methods"] if m["id"] == "fast")
    assert fast["available"] is True
    # The node leaves: every replica stops showing it.
    await b.close()

    async def gone_from_a() -> bool:
        return not await shown_on_a()

    await until(gone_from_a)


async def test_a_job_waiting_in_the_shared_queue_shows_its_place_in_line(
    replicas: Replicas,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    await b.node("gpu-b", styles=CANDY, slots=1)
    await until(lambda: _knows_candy(a))
    first = await a.job()  # runs: the node's one slot
    waiting = [await a.job(), await b.job()]
    assert (await a.wait_for(first, "running"))["position"] is None
    places = [(await a.state(job_id))["position"] for job_id in waiting]
    assert places == [1, 2]


async def test_after_postgresql_restarts_the_replicas_hear_each_other_again(
    replicas: Replicas, postgres_server: Any
) -> None:
    a, b = await replicas("a"), await replicas("b")
    node = await b.node("gpu-b", styles=CANDY)
    await until(lambda: _knows_candy(a))
    await asyncio.to_thread(postgres_server.restart)
    # A job posted to A reaches B's node at once (B heard of it: not on its next tick),
    # and A's WebSocket hears that it ended on B.
    job_id = await until(_posted(a), timeout=15)
    ws = await a.client.ws_connect(f"/api/jobs/{job_id}/events")
    offer = await accept(node)
    await node.send(result_for(offer))
    async with asyncio.timeout(10):
        events = [msg.json() async for msg in ws]
    assert events[-1]["type"] == "done"
    # And one replica leads again (its lock went with its connection).
    services = [service_of(r) for r in (a, b)]

    async def led() -> bool:
        return any(s.member.leader.leading for s in services)

    await until(led)


def _posted(relay: Relay) -> Any:
    async def post() -> str | None:
        resp = await relay.client.post(
            "/api/jobs", data=form(png((64, 48)), style="fast:builtin:candy", size="40")
        )
        return str((await resp.json())["id"]) if resp.status == 202 else None

    return post


async def test_e_mail_goes_out_once_from_the_leader_whichever_replica_ran_the_job(
    replicas: Replicas,
) -> None:
    import email as email_parser
    import email.policy

    from aiosmtpd.smtp import SMTP, Envelope, Session

    received: list[Any] = []

    class Inbox:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            assert isinstance(envelope.content, bytes)
            received.append(
                email_parser.message_from_bytes(envelope.content, policy=email.policy.default)
            )
            return "250 OK"

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Inbox()), "127.0.0.1", 0)
    mail = {
        "smtp_host": "127.0.0.1",
        "smtp_port": server.sockets[0].getsockname()[1],
        "smtp_from": "relay@example.org",
        "smtp_starttls": False,
        "public_url": "https://relay.example.org",
    }
    try:
        a, b = await replicas("a", **mail), await replicas("b", **mail)
        node = await b.node("gpu-b", styles=CANDY)
        await until(lambda: _knows_candy(a))
        resp = await a.client.post(
            "/api/jobs",
            data=form(png((64, 48)), style="fast:builtin:candy", size="40", email="p@example.org"),
        )
        job_id = (await resp.json())["id"]
        offer = await accept(node)
        await node.send(result_for(offer))
        await a.wait_for(job_id, "done")

        async def sent() -> bool:
            status: str | None = (await a.state(job_id))["email_status"]
            return status == "sent"

        await until(sent)
        await asyncio.sleep(1.0)  # a second copy would come within a few ticks
        assert len(received) == 1
        assert received[0]["To"] == "p@example.org"
        assert job_id in received[0].get_body(("plain",)).get_content()
    finally:
        server.close()


async def test_a_claim_whose_answer_was_lost_goes_back_to_the_queue(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relay.cluster import service as cluster_service
    from relay.dispatch import NodeInfo

    a = await replicas("a")
    service = service_of(a)
    job_id = await a.job(method="gatys", style="painting:starry_night", epochs="5")  # no node yet
    # A claim that committed but whose answer never came back (the connection broke):
    # the row names this replica, which does not hold the job.
    info = NodeInfo("ghost", methods=frozenset({"gatys"}), slots=1)
    (claim,) = await service.queue.claim([(info, 1)], time.time())
    assert claim.job.id == job_id
    assert (await a.state(job_id))["state"] == "running"
    monkeypatch.setattr(cluster_service, "ORPHAN_AFTER", -1.0)
    await service._adopt_orphans()
    after = await a.state(job_id)
    assert (after["state"], after["attempts"]) == ("queued", 0)
    node = await a.node("gpu-a", methods=("gatys",))
    assert (await accept(node)).job_id == job_id


async def test_the_leader_deletes_files_no_job_names_once_they_are_old(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relay.cluster import service as cluster_service

    a = await replicas("a")
    service = service_of(a)

    async def leads() -> bool:
        leading: bool = service.member.leader.leading
        return leading

    await until(leads)
    job_id = await a.job(method="gatys", style="painting:starry_night", epochs="5")
    named = (await service.find(job_id)).content_file
    stray = await asyncio.to_thread(service.shared.put, b"an upload whose job was refused")
    service.shared.release([stray])
    await service.sweep()  # not old yet: kept, a replica may be about to record it
    assert await asyncio.to_thread(service.shared.exists, stray)
    monkeypatch.setattr(cluster_service, "UNNAMED_FILES_AFTER", -1.0)
    await service.sweep()
    assert not await asyncio.to_thread(service.shared.exists, stray)
    assert await asyncio.to_thread(service.shared.exists, named)


async def test_a_node_that_moves_to_another_replica_keeps_the_pace_its_jobs_showed(
    replicas: Replicas,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    hub_a, hub_b = (r.client.app[SERVICE].hub for r in (a, b))
    node = await a.node("gpu-1", methods=("gatys",), pace=(Pace("gatys", 0.5, 2.0),))
    # Its jobs showed it slower than its start-up guess.
    hub_a.measure("gpu-1", 100, 1_000_000, 600.0)
    learned = hub_a.paces["gpu-1"]["gatys"]
    assert learned != (0.5, 2.0)

    async def kept() -> bool:
        services = service_of(a)
        return "gpu-1" in services.registry._paces_sent

    await until(kept)
    await node.close()
    b.issued["gpu-1"] = a.issued["gpu-1"]  # one token, shared by every replica
    await b.node("gpu-1", methods=("gatys",), pace=(Pace("gatys", 0.5, 2.0),))

    async def adopted() -> bool:
        pace: tuple[float, float] | None = hub_b.paces.get("gpu-1", {}).get("gatys")
        return bool(pace == learned)

    await until(adopted)


async def test_an_ended_job_shows_no_place_in_line_though_it_was_read_while_queued(
    replicas: Replicas,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    node = await b.node("gpu-b", styles=CANDY, slots=1)
    await until(lambda: _knows_candy(a))
    first = await a.job()
    waiting = await a.job()
    assert (await a.state(waiting))["position"] == 1  # read while queued
    for _ in range(2):
        await node.send(result_for(await accept(node)))
    done = await a.wait_for(waiting, "done")
    assert done["position"] is None
    assert (await a.state(first))["position"] is None
