"""Every job ends, with a reason a person understands (issue 12).

What no node could ever run is refused at submission; a queued job that became impossible
fails at once; one that every connected node declined fails after `--unservable-after`; a
job that never ran has no `started` time.
"""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, make_config, png
from wire_node import WireNode

from protocol import Decline, DeclineReason, Offer, Welcome
from relay.api import SERVICE
from relay.app import NODE_LISTENER, init
from relay.dispatch import Failed, JobTicket, NodeInfo, SendOffer, Timeouts
from relay.hub import RECENT_FAST_STYLES
from relay.jobs import JobService
from relay.reports import NodeReports
from relay.scheduler import Scheduler
from relay.tokens import TokenStore

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start(aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock) -> Start:
    async def go(**changes: Any) -> Client:
        # Heartbeats are not what these tests are about: nodes stay while the clock moves.
        changes.setdefault("heartbeat_interval", 24 * 3600.0)
        return await aiohttp_client(init(make_config(tmp_path, **changes), clock, clock))

    return go


def service(client: Client) -> JobService:
    return client.app[SERVICE]


PHOTO = png((800, 600))


async def create(client: Client, **fields: str) -> dict[str, Any]:
    fields.setdefault("style", "painting:starry_night")
    resp = await client.post("/api/jobs", data=form(PHOTO, **fields))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 202, body
    return body


async def refused(client: Client, **fields: str) -> str:
    fields.setdefault("style", "painting:starry_night")
    resp = await client.post("/api/jobs", data=form(**fields))
    body = await resp.json()
    assert resp.status == 400, body
    message: str = body["error"]
    return message


async def view(client: Client, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get(f"/api/jobs/{job_id}")).json()
    return body


# ---- refused at submission ---------------------------------------------------------------


async def test_arbitrary_with_two_styles_is_refused(start: Start) -> None:
    client = await start()
    says = await refused(client, method="arbitrary", style="painting:starry_night,painting:udnie")
    assert "arbitrary" in says and "one style" in says and "2" in says
    # One is fine, and no job was left behind by the refusal.
    await create(client, method="arbitrary", style="painting:udnie")
    assert service(client).scheduler.queued == 1


async def test_fast_style_no_node_has_is_refused_naming_it(start: Start) -> None:
    client = await start()
    says = await refused(client, style="fast:nope")
    assert "fast:nope" in says and "no connected or recently seen node" in says


async def test_parameters_every_node_would_decline_are_refused(start: Start) -> None:
    client = await start(max_size=10_000)
    # The Gatys engine's step size must be positive; the relay took 0.
    says = await refused(client, learning_rate="0")
    assert "learning_rate" in says and "greater than zero" in says
    # The Gatys engine paints at most 8192 pixels a side, whatever the relay's own cap.
    says = await refused(client, size="9000")
    assert "size" in says and "8192" in says
    # Above 1024 pixels Gatys paints coarse to fine: each scale needs an epoch.
    says = await refused(client, size="2048", epochs="1")
    assert "2 epochs" in says and "2048" in says
    await create(client, size="2048", epochs="2")


async def test_a_blend_with_a_trained_fast_style_is_refused(start: Start) -> None:
    client = await start()
    styles = frozenset({"builtin:candy", "trained:my-cat"})
    FakeNode.connect(service(client), styles=styles)
    says = await refused(client, style="fast:builtin:candy,fast:trained:my-cat")
    assert "fast:trained:my-cat" in says and "cannot be blended" in says
    await create(client, style="fast:trained:my-cat")


# ---- queued jobs that became impossible --------------------------------------------------


async def test_restart_with_lower_caps_fails_jobs_above_them(
    aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock
) -> None:
    config = make_config(tmp_path)
    client = await aiohttp_client(init(config, clock, clock))
    many = await create(client, epochs="400")
    big = await create(client, size="512", epochs="10")
    fine = await create(client, size="128", epochs="10")
    await client.close()

    lower = config.replace(max_epochs=300, max_size=256, default_size=128)
    client = await aiohttp_client(init(lower, clock, clock))
    body = await view(client, many["id"])
    assert body["state"] == "failed"
    assert "400 epochs" in body["error"] and "300" in body["error"]
    body = await view(client, big["id"])
    assert body["state"] == "failed"
    assert "512" in body["error"] and "256" in body["error"]
    assert (await view(client, fine["id"]))["state"] == "queued"
    assert service(client).scheduler.queued == 1


async def test_restart_with_lower_pixel_cap_fails_jobs_above_it(
    aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock
) -> None:
    config = make_config(tmp_path)
    client = await aiohttp_client(init(config, clock, clock))
    job = await create(client, size="400")  # 400x300 = 120,000 pixels
    await client.close()
    client = await aiohttp_client(init(config.replace(max_pixels=100_000), clock, clock))
    body = await view(client, job["id"])
    assert body["state"] == "failed"
    assert "120,000 pixels" in body["error"] and "100,000" in body["error"]


async def test_fast_style_forgotten_fails_its_queued_jobs(start: Start) -> None:
    client = await start()
    reports = NodeReports(service(client))
    FakeNode.connect(reports, name="candy-node", styles=frozenset({"candy"})).lost()
    # Its node left a moment ago: the style is still known, the job waits for it.
    job = await create(client, style="fast:candy")
    assert (await view(client, job["id"]))["state"] == "queued"
    # A node with many other styles comes and goes: candy drops out of the recent set.
    others = frozenset(f"s{i}" for i in range(RECENT_FAST_STYLES))
    FakeNode.connect(reports, name="many", styles=others, methods=frozenset({"gatys"})).lost()
    body = await view(client, job["id"])
    assert body["state"] == "failed"
    assert "fast:candy" in body["error"] and "no node" in body["error"].lower()
    assert body["started"] is None


async def test_recovered_fast_job_keeps_its_style_known(
    aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock
) -> None:
    config = make_config(tmp_path)
    client = await aiohttp_client(init(config, clock, clock))
    FakeNode.connect(service(client), styles=frozenset({"candy"})).lost()
    job = await create(client, style="fast:candy")
    await client.close()
    # After a restart no node is known yet; the job it was admitted with still waits,
    # and its style is one that was seen.
    client = await aiohttp_client(init(config, clock, clock))
    assert (await view(client, job["id"]))["state"] == "queued"
    await create(client, style="fast:candy")


# ---- declined by every connected node ----------------------------------------------------


async def test_job_every_node_declined_fails_after_unservable_after(
    start: Start, clock: FakeClock
) -> None:
    client = await start(unservable_after=600.0)
    job = await create(client)
    reports = NodeReports(service(client))
    for name in ("a", "b"):
        node = FakeNode.connect(reports, name=name)
        offer = await node.offer()
        assert reports.declined(node.handle, offer.job_id, offer.lease, f"{name} says no")
    clock.advance(599)
    service(client).tick()
    assert (await view(client, job["id"]))["state"] == "queued"
    clock.advance(2)
    service(client).tick()
    body = await view(client, job["id"])
    assert body["state"] == "failed"
    assert "a: a says no" in body["error"] and "b: b says no" in body["error"]
    assert "10 min" in body["error"]
    assert body["started"] is None


async def test_declined_job_waits_on_for_a_node_that_has_not_declined(
    start: Start, clock: FakeClock
) -> None:
    client = await start(unservable_after=600.0)
    job = await create(client)
    reports = NodeReports(service(client))
    picky = FakeNode.connect(reports, name="picky")
    offer = await picky.offer()
    # Another node that could run it is busy with someone else's job.
    busy = FakeNode.connect(reports, name="busy")
    other = await create(client)
    assert (await busy.offer()).job_id == other["id"]
    assert reports.declined(picky.handle, offer.job_id, offer.lease, "not today")
    clock.advance(3600)
    service(client).tick()
    assert (await view(client, job["id"]))["state"] == "queued"


async def test_a_real_decline_over_the_wire_ends_the_job_with_its_words(
    start: Start, clock: FakeClock, tmp_path: Path
) -> None:
    client = await start(unservable_after=60.0)
    job = await create(client)
    node = await WireNode.dial(client.app[NODE_LISTENER].port)
    try:
        await node.hello(TokenStore(tmp_path / "data").add("gpu-1"), "gpu-1")
        await node.expect(Welcome)
        offer = await node.expect(Offer)
        words = "epochs 200 is above this node's cap of 10 (max_epochs)"
        await node.send(Decline(offer.job_id, offer.lease_id, DeclineReason.TOO_LARGE, words))
        async with asyncio.timeout(5):
            while (body := await view(client, job["id"]))["state"] != "queued":
                await asyncio.sleep(0.01)
        assert body["started"] is None and words in body["waiting_reason"]
        clock.advance(61)
        service(client).tick()
        body = await view(client, job["id"])
        assert body["state"] == "failed" and f"gpu-1: {words}" in body["error"]
        assert body["started"] is None
    finally:
        await node.close()


# ---- started -----------------------------------------------------------------------------


async def test_a_declined_job_has_no_started_time(start: Start) -> None:
    client = await start()
    job = await create(client)
    reports = NodeReports(service(client))
    node = FakeNode.connect(reports)
    offer = await node.offer()
    assert (await view(client, job["id"]))["started"] is not None
    assert reports.declined(node.handle, offer.job_id, offer.lease, "over my cap")
    body = await view(client, job["id"])
    assert body["state"] == "queued" and body["started"] is None
    # Cancelled now, it still never ran.
    await client.delete(f"/api/jobs/{job['id']}")
    assert (await view(client, job["id"]))["started"] is None


# ---- the scheduler's rule, on its own clock ----------------------------------------------


def _spec(job_id: str = "j") -> JobTicket:
    return JobTicket(job_id, "alice", "gatys", 100, 512 * 512)


def _info(name: str) -> NodeInfo:
    return NodeInfo(name, methods=frozenset({"gatys"}))


def _decline(s: Scheduler, node: str, now: float, reason: str) -> None:
    lease = s.lease_of("j")
    assert lease is not None and lease[0] == node
    s.declined(node, "j", lease[1], reason, now)


def test_scheduler_fails_a_job_every_fitting_node_declined() -> None:
    s = Scheduler(Timeouts(unservable_after=100.0))
    s.submit(_spec(), 0.0)
    s.node_up(_info("a"), 0.0)
    _decline(s, "a", 10.0, "too big")
    assert s.tick(109.0) == []
    actions = s.tick(111.0)
    assert [type(a) for a in actions] == [Failed]
    assert "a: too big" in actions[0].reason  # type: ignore[union-attr]
    assert s.queued == 0


def test_scheduler_clock_restarts_when_a_fresh_node_could_take_it() -> None:
    s = Scheduler(Timeouts(unservable_after=100.0))
    s.submit(_spec(), 0.0)
    s.node_up(_info("a"), 0.0)
    _decline(s, "a", 10.0, "too big")
    # A node that has not declined it arrives and declines in turn, later.
    assert [type(a) for a in s.node_up(_info("b"), 50.0)] == [SendOffer]
    _decline(s, "b", 90.0, "no room")
    assert s.tick(150.0) == []
    assert [type(a) for a in s.tick(191.0)] == [Failed]


def test_scheduler_waits_while_a_fitting_node_has_not_declined() -> None:
    s = Scheduler(Timeouts(unservable_after=10.0))
    s.node_up(_info("a"), 0.0)
    s.node_up(_info("b"), 0.0)
    s.submit(_spec("other"), 0.0)  # goes to a (fewest started on a tie: by name)
    s.submit(_spec(), 0.0)  # goes to b
    _decline(s, "b", 1.0, "too big")
    # Long past `unservable_after`, within the running job's stall limit.
    assert s.tick(100.0) == []
    assert s.why_waiting("j") is None  # a could run it once free
