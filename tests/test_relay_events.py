"""Job events: the bus on its own, and the WebSocket a page subscribes to."""

from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, make_config

from relay.api import SERVICE
from relay.app import init
from relay.events import EventBus

Client = TestClient[web.Request, web.Application]


def test_slow_subscriber_keeps_only_the_latest_events() -> None:
    bus = EventBus(queue_size=4)
    sub = bus.subscribe("j")
    for epoch in range(10):
        bus.publish("j", {"type": "progress", "epoch": epoch})
    bus.publish("j", {"type": "done"})
    assert sub.dropped == 7
    kept = [sub._queue.get_nowait() for _ in range(4)]
    assert [e.get("epoch") for e in kept] == [7, 8, 9, None]
    assert kept[-1]["type"] == "done"


def test_topics_are_forgotten_when_the_last_subscriber_leaves() -> None:
    bus = EventBus()
    a, b = bus.subscribe("j"), bus.subscribe("j")
    assert (bus.watched(), bus.subscribers) == (["j"], 2)
    a.close()
    b.close()
    assert (bus.watched(), bus.subscribers) == ([], 0)
    bus.publish("j", {"type": "progress"})  # nobody listens: nothing kept


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path) -> Client:
    clock = FakeClock()
    return await aiohttp_client(init(make_config(tmp_path), clock, clock))


async def create(client: Client) -> str:
    resp = await client.post("/api/jobs", data=form(style="painting:udnie", epochs="20"))
    assert resp.status == 202
    job_id: str = (await resp.json())["id"]
    return job_id


async def receive(ws: ClientWebSocketResponse) -> dict[str, Any]:
    event: dict[str, Any] = await ws.receive_json(timeout=5)
    return event


async def test_events_from_queued_to_done(client: Client) -> None:
    job_id = await create(client)
    async with client.ws_connect(f"/api/jobs/{job_id}/events") as ws:
        first = await receive(ws)
        assert first["type"] == "state"
        assert (first["job"]["state"], first["job"]["position"]) == ("queued", 1)
        node = FakeNode.connect(client.app[SERVICE], name="gpu-a")
        offer = await node.offer()
        assert await receive(ws) == {"type": "started", "node": "gpu-a"}
        node.progress(offer, 1)
        progress = await receive(ws)
        assert (progress["type"], progress["epoch"], progress["epochs"]) == ("progress", 1, 20)
        assert progress["losses"]["style"] == 2.0
        await node.preview(offer)
        preview = await receive(ws)
        assert preview == {"type": "preview", "url": f"/api/jobs/{job_id}/preview?n=1"}
        assert (await client.get(preview["url"])).status == 200
        await node.finish(offer)
        done = await receive(ws)
        assert done["type"] == "done"
        assert done["job"]["result_url"] == f"/api/jobs/{job_id}/result"
        assert (await ws.receive(timeout=5)).type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert client.app[SERVICE].bus.subscribers == 0


async def test_late_subscriber_first_gets_the_current_state(client: Client) -> None:
    job_id = await create(client)
    node = FakeNode.connect(client.app[SERVICE])
    offer = await node.offer()
    node.progress(offer, 7)
    async with client.ws_connect(f"/api/jobs/{job_id}/events") as ws:
        state = await receive(ws)
        assert (state["type"], state["job"]["state"], state["job"]["epoch"]) == (
            "state",
            "running",
            7,
        )
    await node.finish(offer)
    async with client.ws_connect(f"/api/jobs/{job_id}/events") as ws:
        state = await receive(ws)
        assert (state["type"], state["job"]["state"]) == ("state", "done")
        assert (await ws.receive(timeout=5)).type in (WSMsgType.CLOSE, WSMsgType.CLOSED)


async def test_queue_position_and_cancel_events(client: Client) -> None:
    first = await create(client)
    second = await create(client)
    async with client.ws_connect(f"/api/jobs/{second}/events") as ws:
        assert (await receive(ws))["job"]["position"] == 2
        await client.delete(f"/api/jobs/{first}")
        moved = await receive(ws)
        assert (moved["type"], moved["position"]) == ("queued", 1)
        assert moved["reason"] == "No node is online; the job starts when one connects."
        await client.delete(f"/api/jobs/{second}")
        cancelled = await receive(ws)
        assert (cancelled["type"], cancelled["job"]["state"]) == ("cancelled", "cancelled")


async def test_requeue_is_announced(client: Client) -> None:
    job_id = await create(client)
    node = FakeNode.connect(client.app[SERVICE], name="flaky")
    await node.offer()
    async with client.ws_connect(f"/api/jobs/{job_id}/events") as ws:
        assert (await receive(ws))["job"]["state"] == "running"
        node.lost()
        requeued = await receive(ws)
        assert requeued["type"] == "queued"
        assert (requeued["position"], requeued["attempts"]) == (1, 1)
        assert requeued["requeued"] == "connection closed"


async def test_unknown_job_is_404_before_upgrade(client: Client) -> None:
    resp = await client.get("/api/jobs/nope/events")
    assert resp.status == 404
    assert "No such job" in (await resp.json())["error"]


async def test_a_new_reason_to_wait_is_announced_though_the_place_is_the_same(
    client: Client,
) -> None:
    job_id = await create(client)
    async with client.ws_connect(f"/api/jobs/{job_id}/events") as ws:
        first = await receive(ws)
        assert first["job"]["waiting_reason"].startswith("No node is online")
        # A node comes that cannot run it: still first in line, but now for another reason.
        node = FakeNode.connect(client.app[SERVICE], name="fast-only", methods=frozenset({"fast"}))
        news = await receive(ws)
        assert (news["type"], news["position"]) == ("queued", 1)
        assert "gatys" in news["reason"] and not news["reason"].startswith("No node is online")
        # It leaves again: the same place, and the page must not keep the old words.
        node.lost()
        again = await receive(ws)
        assert (again["type"], again["position"]) == ("queued", 1)
        assert again["reason"].startswith("No node is online")
