"""Trust is earned (issue 11, item 8): a node that has not finished a job is on probation.

While some connected node has proven itself, a newcomer holds at most one job, and gets one
only when no proven node could run it or when it has waited `Timeouts.probation_wait` for
the busy proven nodes. The scheduler's rules alone (pure, on a made-up clock), then once
through the app with two fake nodes.
"""

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, make_config

from relay.api import SERVICE
from relay.app import init
from relay.dispatch import JobTicket, NodeInfo, Requeued, SendCancel, SendOffer, Timeouts
from relay.jobs import JobService
from relay.scheduler import Scheduler

ALL = frozenset({"gatys", "fast", "arbitrary"})
WAIT = Timeouts().probation_wait


def node(name: str, **kw: Any) -> NodeInfo:
    return NodeInfo(name, **{"methods": ALL, **kw})


def job(job_id: str, method: str = "gatys", pixels: int = 512 * 384) -> JobTicket:
    return JobTicket(job_id, "alice", method, 100 if method == "gatys" else 1, pixels)


def offers(actions: Sequence[object]) -> list[tuple[str, str]]:
    return [(a.node, a.job) for a in actions if isinstance(a, SendOffer)]


def finish(s: Scheduler, job_id: str, now: float) -> list[object]:
    held = s.lease_of(job_id)
    assert held is not None
    return list(s.finished(held[0], job_id, held[1], now))


def proven(name: str = "honest", slots: int = 1) -> Scheduler:
    """A scheduler whose node `name` has finished one job by t=1."""
    s = Scheduler()
    s.node_up(node(name, slots=slots), 0.0)
    assert offers(s.submit(job("warm-up"), 0.0)) == [(name, "warm-up")]
    finish(s, "warm-up", 1.0)
    return s


# ---- the rule, pure ------------------------------------------------------------------------


def test_a_proven_node_is_preferred_to_a_newcomer_claiming_more_slots() -> None:
    s = proven(slots=4)
    s.node_up(node("mallory", slots=256), 2.0)
    placed = [offers(s.submit(job(f"j{i}"), 3.0)) for i in range(4)]
    # Before: the newcomer was less loaded (0/4 against 1/4) and had started fewer jobs.
    assert placed == [[("honest", f"j{i}")] for i in range(4)]


def test_a_newcomer_gets_a_job_once_it_has_waited_for_busy_proven_nodes() -> None:
    s = proven()
    s.node_up(node("newcomer"), 2.0)
    assert offers(s.submit(job("a"), 3.0)) == [("honest", "a")]
    assert offers(s.submit(job("b"), 10.0)) == []
    assert offers(s.tick(10.0 + WAIT / 2)) == []
    assert offers(s.tick(10.0 + WAIT)) == [("newcomer", "b")]


def test_a_newcomer_gets_at_once_a_job_no_proven_node_can_run() -> None:
    s = proven()  # honest runs every method, but only images of up to 4 MP
    s.node_up(node("big", max_pixels=16_000_000), 2.0)
    assert offers(s.submit(job("huge", pixels=9_000_000), 3.0)) == [("big", "huge")]


def test_a_newcomer_gets_at_once_a_job_the_proven_node_failed() -> None:
    s = proven()
    s.node_up(node("newcomer"), 2.0)
    s.submit(job("a"), 3.0)
    held = s.lease_of("a")
    assert held is not None and held[0] == "honest"
    # A second opinion is due, and only the newcomer can give it.
    retried = s.failed("honest", "a", held[1], 4.0, reason="out of memory", retry=True)
    assert offers(retried) == [("newcomer", "a")]


def test_a_newcomer_holds_one_job_at_a_time_until_it_finishes_one() -> None:
    s = proven()
    s.node_up(node("newcomer", slots=4), 2.0)
    s.submit(job("a"), 3.0)  # honest is busy from here on
    for i in range(4):
        s.submit(job(f"b{i}"), 3.0)
    assert offers(s.tick(3.0 + WAIT)) == [("newcomer", "b0")]
    assert offers(s.tick(20.0)) == []
    # One finished job proves it: it gets its believed slots from now on.
    after = offers(finish(s, "b0", 21.0))
    assert after == [("newcomer", "b1"), ("newcomer", "b2"), ("newcomer", "b3")]


def test_a_proven_node_keeps_its_record_when_it_reconnects() -> None:
    s = proven(slots=2)
    s.node_down("honest", 2.0)
    s.node_up(node("mallory", slots=4), 3.0)
    s.node_up(node("honest", slots=2), 4.0)
    assert offers(s.submit(job("a"), 5.0)) == [("honest", "a")]
    # And a newcomer's probation does not end by reconnecting either.
    s.node_down("mallory", 6.0)
    s.node_up(node("mallory", slots=4), 7.0)
    assert offers(s.submit(job("b"), 8.0)) == [("honest", "b")]
    assert offers(s.submit(job("c"), 8.0)) == []
    assert offers(s.tick(8.0 + WAIT)) == [("mallory", "c")]


def test_a_relay_with_only_unproven_nodes_dispatches_at_once() -> None:
    s = Scheduler()
    s.node_up(node("a", slots=2), 0.0)
    s.node_up(node("b", slots=2), 0.0)
    placed = [name for i in range(4) for name, _ in offers(s.submit(job(f"j{i}"), 1.0))]
    assert sorted(placed) == ["a", "a", "b", "b"]


def test_a_stall_puts_a_proven_node_back_on_probation() -> None:
    s = Scheduler()
    s.node_up(node("honest"), 0.0)
    s.node_up(node("other"), 0.0)
    for i in range(2):
        s.submit(job(f"x{i}"), 0.0)
    for i in range(2):
        finish(s, f"x{i}", 1.0)  # both proven
    assert offers(s.submit(job("a"), 2.0)) == [("honest", "a")]
    held = s.lease_of("a")
    assert held is not None
    stalled = s.tick(2.0 + Timeouts().stall_limit(job("a")) + 1)
    assert [a.job for a in stalled if isinstance(a, SendCancel)] == ["a"]
    assert [a.job for a in stalled if isinstance(a, Requeued)] == ["a"]
    assert offers(stalled) == [("other", "a")]
    t = 200.0
    s.lease_closed("honest", held[1], t)  # it confirms the stop: its slot is free
    finish(s, "a", t)
    # Back on probation: the proven node gets the next job although it started more...
    assert offers(s.submit(job("b"), t)) == [("other", "b")]
    # ...and "honest" gets one only once it has waited for "other".
    assert offers(s.submit(job("c"), t)) == []
    assert offers(s.tick(t + WAIT)) == [("honest", "c")]


# ---- stall limits by method ----------------------------------------------------------------


def test_one_pass_methods_have_a_shorter_stall_limit_than_gatys() -> None:
    t = Timeouts()
    small, large = 256 * 256, 2048 * 2048
    assert t.stall_limit(job("g", "gatys", small)) == t.stall
    assert t.stall_limit(job("f", "fast", small)) == t.one_pass_stall < t.stall
    assert t.stall_limit(job("a", "arbitrary", large)) == pytest.approx(
        t.one_pass_stall * large / 1e6
    )
    # A relay configured with a shorter stall than that keeps its own, for every method.
    assert Timeouts(stall=10.0).stall_limit(job("f", "fast", small)) == 10.0


# ---- through the app -----------------------------------------------------------------------

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start(
    aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock
) -> Callable[[], Awaitable[Client]]:
    async def go() -> Client:
        return await aiohttp_client(init(make_config(tmp_path), clock, clock))

    return go


async def create(client: Client) -> str:
    resp = await client.post("/api/jobs", data=form(method="fast", style="fast:candy", size="64"))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 202, body
    job_id: str = body["id"]
    return job_id


async def test_a_silent_newcomer_gets_work_only_after_the_proven_node_was_busy_for_a_while(
    start: Callable[[], Awaitable[Client]], clock: FakeClock
) -> None:
    client = await start()
    service: JobService = client.app[SERVICE]
    honest = FakeNode.connect(service, name="honest")
    await create(client)
    assert (await honest.finish(await honest.offer()))[0]
    mallory = FakeNode.connect(service, name="mallory", slots=256)
    nodes = {n["name"]: n for n in (await (await client.get("/api/nodes")).json())["nodes"]}
    assert (nodes["honest"]["probation"], nodes["mallory"]["probation"]) == (False, True)
    assert "mallory" in (page := await (await client.get("/status")).text())
    assert "on probation (has finished no job yet)" in page
    # The honest node takes every job it is free for, however many slots mallory claims.
    for _ in range(3):
        job_id = await create(client)
        offer = await honest.offer()
        assert offer.job_id == job_id
        assert (await honest.finish(offer))[0]
    assert mallory.handle.outbox.empty()
    busy = await create(client)
    hold = await honest.offer()
    assert hold.job_id == busy
    waiting = await create(client)
    also = await create(client)
    service.tick()
    assert mallory.handle.outbox.empty()
    # Once the job has waited probation_wait for the busy honest node, mallory gets it: one.
    clock.advance(WAIT)
    for n in (honest, mallory):
        service.hub.seen(n.handle)
    service.tick()
    assert (await mallory.offer()).job_id == waiting
    assert mallory.handle.outbox.empty()
    # The honest node, free again, takes the next one.
    assert (await honest.finish(hold))[0]
    assert (await honest.offer()).job_id == also
