"""A malicious or broken node (issue 11, item 8): slot claims, bad images, liars.

The scheduler's rules alone (pure, on a made-up clock), then the same through the app with
fake nodes behind the node seam.
"""

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, jpeg, make_config, png
from relay_images import png_header_only

from relay.api import SERVICE
from relay.app import init
from relay.dispatch import (
    Failed,
    JobTicket,
    NodeInfo,
    NodePaused,
    Requeued,
    SendOffer,
    Timeouts,
)
from relay.handles import OfferJob
from relay.imagecheck import BadImage, check_jpeg, check_png
from relay.jobs import JobService
from relay.reports import NodeReports
from relay.reputation import PAUSE_AFTER
from relay.scheduler import Scheduler

ALL = frozenset({"gatys", "fast", "arbitrary"})
PAUSE = 600.0
# The rest rule alone: a newcomer on probation gets a job as soon as the proven node is busy.
NO_WAIT = Timeouts(probation_wait=0.0)


def node(name: str, **kw: Any) -> NodeInfo:
    return NodeInfo(name, **{"methods": ALL, **kw})


def job(job_id: str, client: str = "alice") -> JobTicket:
    return JobTicket(job_id, client, "gatys", 100, 512 * 384)


def offers(actions: Sequence[object]) -> list[tuple[str, str]]:
    return [(a.node, a.job) for a in actions if isinstance(a, SendOffer)]


def lease(s: Scheduler, job_id: str) -> str:
    held = s.lease_of(job_id)
    assert held is not None
    return held[1]


def where(s: Scheduler, job_id: str) -> str:
    held = s.lease_of(job_id)
    assert held is not None
    return held[0]


# ---- slots: a node's claim is capped, work is spread by load ------------------------------


def test_a_node_claiming_256_slots_is_believed_up_to_the_cap() -> None:
    s = Scheduler(max_slots=4)
    for i in range(10):
        s.submit(job(f"j{i}"), 0.0)
    taken = offers(s.node_up(node("greedy", slots=256), 1.0))
    assert len(taken) == 4
    assert s.nodes()[0].info.slots == 4
    # The honest node that comes later still finds work waiting.
    assert len(offers(s.node_up(node("honest", slots=1), 2.0))) == 1


def test_work_goes_to_the_least_loaded_node_not_the_one_with_most_free_slots() -> None:
    s = Scheduler(max_slots=4)
    s.node_up(node("big", slots=4), 0.0)
    s.node_up(node("small", slots=1), 0.0)
    placed = [node_name for node_name, _ in offers(s.submit(job("j0"), 1.0))]
    placed += [node_name for node_name, _ in offers(s.submit(job("j1"), 1.0))]
    # Both idle at first: each gets one job (before, "big" took both: more free slots).
    assert sorted(placed) == ["big", "small"]
    for i in range(2, 5):
        s.submit(job(f"j{i}"), 2.0)
    assert sorted(len(v.jobs) for v in s.nodes()) == [1, 4]


def test_ties_are_broken_by_fewest_jobs_started() -> None:
    s = Scheduler()
    s.node_up(node("a"), 0.0)
    s.node_up(node("b"), 0.0)
    # Both prove themselves first (else the one that finished a job first is preferred).
    for name, job_id in offers([*s.submit(job("x0"), 0.0), *s.submit(job("x1"), 0.0)]):
        s.finished(name, job_id, lease(s, job_id), 0.5)
    seen = []
    for i in range(4):
        [(name, job_id)] = offers(s.submit(job(f"j{i}"), 1.0 + i))
        seen.append(name)
        s.finished(name, job_id, lease(s, job_id), 1.5 + i)
    assert seen == ["a", "b", "a", "b"]


# ---- a node whose jobs fail: rested while others succeed ----------------------------------


def liar_and_honest() -> Scheduler:
    s = Scheduler(pause=PAUSE)
    s.node_up(node("liar"), 0.0)
    s.node_up(node("honest"), 0.0)
    return s


def test_a_failed_job_goes_to_a_node_that_has_not_failed_it() -> None:
    s = liar_and_honest()
    s.submit(job("a"), 1.0)
    s.submit(job("b"), 1.0)
    assert {where(s, "a"), where(s, "b")} == {"liar", "honest"}
    bad = "a" if where(s, "a") == "liar" else "b"
    good = "b" if bad == "a" else "a"
    actions = s.failed("liar", bad, lease(s, bad), 2.0, reason="internal error", retry=True)
    assert [a for a in actions if isinstance(a, Requeued)] == [Requeued(bad, 1, "internal error")]
    # The liar is free, but the job waits for the node that has not failed it yet.
    assert offers(actions) == []
    actions = s.finished("honest", good, lease(s, good), 3.0)
    assert offers(actions) == [("honest", bad)]


def test_a_non_retryable_failure_gets_a_second_opinion_from_another_node() -> None:
    s = liar_and_honest()
    s.submit(job("a"), 1.0)
    first = where(s, "a")
    other = "honest" if first == "liar" else "liar"
    actions = s.failed(first, "a", lease(s, "a"), 2.0, reason="invalid input", retry=False)
    assert not [a for a in actions if isinstance(a, Failed)]
    assert offers(actions) == [(other, "a")]
    assert s.lease_of("a") is not None
    # The second node agrees: now it fails, with the node's words.
    actions = s.failed(other, "a", lease(s, "a"), 3.0, reason="invalid input", retry=False)
    assert [a for a in actions if isinstance(a, Failed)] == [Failed("a", "invalid input")]


def test_a_lone_node_still_fails_a_job_outright() -> None:
    s = Scheduler()
    s.node_up(node("only"), 0.0)
    s.submit(job("a"), 1.0)
    actions = s.failed("only", "a", lease(s, "a"), 2.0, reason="invalid input", retry=False)
    assert actions == [Failed("a", "invalid input")]


def fail_next(s: Scheduler, name: str, job_id: str, now: float) -> list[object]:
    s.submit(job(job_id), now)
    assert where(s, job_id) == name
    return list(s.failed(name, job_id, lease(s, job_id), now, reason="internal", retry=True))


def test_a_node_failing_in_a_row_while_another_succeeds_is_paused_then_on_probation() -> None:
    s = Scheduler(NO_WAIT, pause=PAUSE)
    s.node_up(node("honest"), 0.0)
    s.submit(job("ok"), 0.0)
    s.finished("honest", "ok", lease(s, "ok"), 1.0)
    s.submit(job("long"), 1.0)  # keeps the honest node busy: new jobs go to the liar
    s.node_up(node("liar"), 2.0)
    events: list[object] = []
    for i in range(PAUSE_AFTER):
        events += fail_next(s, "liar", f"x{i}", 10.0 + i)
    [paused] = [e for e in events if isinstance(e, NodePaused)]
    assert (paused.node, paused.seconds) == ("liar", PAUSE)
    assert "3 jobs in a row failed" in paused.reason
    view = {v.info.name: v for v in s.nodes()}["liar"]
    assert view.paused_until == 12.0 + PAUSE and "internal" in (view.pause_reason or "")
    # Paused: new work waits for the honest node.
    assert offers(s.submit(job("y"), 20.0)) == []
    # A reconnect does not lift the pause.
    s.node_up(node("liar"), 30.0)
    assert offers(s.tick(30.0)) == []
    # The honest node finishes (a recent success) and takes one of the liar's failed jobs.
    [(name, _)] = offers(s.finished("honest", "long", lease(s, "long"), 600.0))
    assert name == "honest"
    # The pause ends on the clock; one more failure rests it again at once.
    assert ("liar", "y") in offers(s.tick(12.0 + PAUSE + 1))
    again = s.failed("liar", "y", lease(s, "y"), 12.0 + PAUSE + 2, reason="internal", retry=True)
    assert [e.node for e in again if isinstance(e, NodePaused)] == ["liar"]


def test_failures_alone_do_not_pause_when_no_other_node_succeeds() -> None:
    s = Scheduler(Timeouts(max_attempts=10), pause=PAUSE)
    s.node_up(node("flaky"), 0.0)
    s.submit(job("x"), 0.0)
    events: list[object] = []
    for i in range(PAUSE_AFTER + 1):
        # The only node: a job it failed comes back to it (as before).
        assert where(s, "x") == "flaky"
        events += s.failed("flaky", "x", lease(s, "x"), 10.0 + i, reason="oom", retry=True)
    assert not [e for e in events if isinstance(e, NodePaused)]
    assert s.nodes()[0].paused_until is None


def test_a_success_resets_the_count_and_a_stale_success_elsewhere_does_not_count() -> None:
    s = Scheduler(NO_WAIT, pause=PAUSE)
    s.node_up(node("honest"), 0.0)
    s.submit(job("ok"), 0.0)
    s.finished("honest", "ok", lease(s, "ok"), 1.0)
    s.submit(job("long"), 1.0)
    s.node_up(node("n"), 2.0)
    fail_next(s, "n", "x0", 3.0)
    fail_next(s, "n", "x1", 4.0)
    s.submit(job("good"), 5.0)
    s.finished("n", "good", lease(s, "good"), 6.0)
    fail_next(s, "n", "x2", 7.0)
    fail_next(s, "n", "x3", 8.0)
    assert s.nodes()[1].paused_until is None
    # The honest node's success is older than the pause window: no comparison to draw.
    events = fail_next(s, "n", "x4", 2.0 + PAUSE)
    assert not [e for e in events if isinstance(e, NodePaused)]


def test_a_node_failing_before_anyone_succeeds_is_paused_when_someone_does() -> None:
    s = Scheduler(pause=PAUSE)
    s.node_up(node("honest"), 0.0)
    s.submit(job("long"), 0.0)
    s.node_up(node("liar"), 0.0)
    for i in range(PAUSE_AFTER):
        fail_next(s, "liar", f"x{i}", 1.0 + i)
    actions = s.finished("honest", "long", lease(s, "long"), 10.0)
    assert [e.node for e in actions if isinstance(e, NodePaused)] == ["liar"]
    # The jobs the liar failed run on the honest node, none of them back on the liar.
    assert [name for name, _ in offers(actions)] == ["honest"]


def test_a_bad_preview_counts_as_a_fault() -> None:
    s = Scheduler(pause=PAUSE)
    s.node_up(node("honest"), 0.0)
    s.submit(job("ok"), 0.0)
    s.finished("honest", "ok", lease(s, "ok"), 1.0)
    s.node_up(node("n"), 1.0)
    events: list[object] = []
    for i in range(PAUSE_AFTER):
        events += s.fault("n", 2.0 + i, "sent an unusable preview")
    assert [e.node for e in events if isinstance(e, NodePaused)] == ["n"]


# ---- image checks, pure --------------------------------------------------------------------


def test_check_png_accepts_the_exact_size_only() -> None:
    check_png(png((40, 30)), 40, 30)
    with pytest.raises(BadImage, match="40x30"):
        check_png(png((41, 30)), 40, 30)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (png_header_only(60000, 60000), "60000x60000"),
        (png((40, 30)) + b"<html><script>alert(1)</script></html>", "after the image's end"),
        (png((40, 30))[:-30], "truncated"),
        (jpeg((40, 30)), "not a PNG"),
        (b"", "not a PNG"),
    ],
)
def test_check_png_refuses(data: bytes, says: str) -> None:
    with pytest.raises(BadImage, match=says):
        check_png(data, 40, 30)


def test_check_jpeg_bounds_and_structure() -> None:
    check_jpeg(jpeg((32, 24)), 40, 30)
    with pytest.raises(BadImage, match="larger"):
        check_jpeg(jpeg((64, 48)), 40, 30)
    with pytest.raises(BadImage, match="after the image's end"):
        check_jpeg(jpeg((32, 24)) + b"<script>alert(1)</script>", 40, 30)
    with pytest.raises(BadImage):
        check_jpeg(b"\xff\xd8\xff<script>alert(1)</script>", 40, 30)
    with pytest.raises(BadImage, match="not a JPEG"):
        check_jpeg(png((32, 24)), 40, 30)
    with pytest.raises(BadImage, match="truncated"):
        check_jpeg(jpeg((32, 24))[:-40], 40, 30)


# ---- through the app -----------------------------------------------------------------------

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start(aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock) -> Start:
    async def go(**changes: Any) -> Client:
        return await aiohttp_client(init(make_config(tmp_path, **changes), clock, clock))

    return go


def service(client: Client) -> JobService:
    return client.app[SERVICE]


async def create(client: Client, size: str = "64") -> str:
    resp = await client.post("/api/jobs", data=form(style="painting:starry_night", size=size))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 202, body
    job_id: str = body["id"]
    return job_id


async def state(client: Client, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get(f"/api/jobs/{job_id}")).json()
    return body


async def test_a_greedy_node_does_not_take_every_job_from_an_honest_one(start: Start) -> None:
    client = await start()
    reports = NodeReports(service(client))
    jobs = [await create(client) for _ in range(6)]
    greedy = FakeNode.connect(reports, name="greedy", slots=256)
    honest = FakeNode.connect(reports, name="honest", slots=1)
    taken = [await greedy.offer() for _ in range(4)]
    mine = await honest.offer()
    assert {o.job_id for o in [*taken, mine]} <= set(jobs)
    nodes = {n["name"]: n for n in (await (await client.get("/api/nodes")).json())["nodes"]}
    assert (nodes["greedy"]["slots"], nodes["greedy"]["busy_slots"]) == (4, 4)
    assert (nodes["honest"]["slots"], nodes["honest"]["busy_slots"]) == (1, 1)


async def result(node: FakeNode, offer: OfferJob, data: bytes, size: tuple[int, int]) -> bool:
    width, height = size
    return await node.reports.result(
        node.handle, offer.job_id, offer.lease, data, width=width, height=height
    )


@pytest.mark.parametrize(
    "bad",
    ["bomb_header", "html_appended", "truncated", "wrong_size"],
)
async def test_a_bad_result_is_refused_and_the_job_requeued(start: Start, bad: str) -> None:
    client = await start()
    job_id = await create(client, size="64")
    node = FakeNode.connect(service(client))
    offer = await node.offer()
    size = (offer.width, offer.height)
    good = png(size)
    data, claimed = {
        "bomb_header": (png_header_only(60000, 60000), (60000, 60000)),
        "html_appended": (good + b"<html><script>alert(1)</script></html>", size),
        "truncated": (good[: len(good) // 2], size),
        "wrong_size": (png((offer.width + 1, offer.height)), (offer.width + 1, offer.height)),
    }[bad]
    assert await result(node, offer, data, claimed)  # counted: the lease ended
    body = await state(client, job_id)
    assert body["attempts"] == 1 and body["state"] in ("queued", "running")
    assert (await client.get(f"/api/jobs/{job_id}/result")).status == 404
    # The job comes back (to the same, only node); a good result is accepted.
    again = await node.offer()
    assert again.job_id == job_id
    assert await result(node, again, good, size)
    body = await state(client, job_id)
    assert (body["state"], body["attempts"]) == ("done", 1)
    resp = await client.get(f"/api/jobs/{job_id}/result")
    assert await resp.read() == good
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_bad_previews_are_not_served(start: Start) -> None:
    client = await start()
    job_id = await create(client, size="64")
    node = FakeNode.connect(service(client))
    offer = await node.offer()
    reports = node.reports
    url = f"/api/jobs/{job_id}/preview"
    script = b"\xff\xd8\xff\xe0<script>alert(document.cookie)</script>"
    assert not await reports.preview(node.handle, offer.job_id, offer.lease, script)
    assert (await client.get(url)).status == 404
    first = jpeg((32, 24))
    assert await reports.preview(node.handle, offer.job_id, offer.lease, first)
    too_big = jpeg((offer.width * 2, offer.height * 2))
    assert not await reports.preview(node.handle, offer.job_id, offer.lease, too_big)
    html_tail = jpeg((16, 12)) + b"<html><script>alert(1)</script>"
    assert not await reports.preview(node.handle, offer.job_id, offer.lease, html_tail)
    resp = await client.get(url)
    assert await resp.read() == first  # the last good one
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    body = await state(client, job_id)
    assert (body["state"], body["attempts"]) == ("running", 0)


async def test_image_responses_say_nosniff(start: Start) -> None:
    client = await start()
    job_id = await create(client)
    reports = NodeReports(service(client))
    FakeNode.connect(
        reports, name="thumbs", methods=frozenset({"fast"}), thumbnails={"candy": jpeg()}
    )
    for path in [
        f"/api/jobs/{job_id}/content",
        f"/api/jobs/{job_id}/style/0",
        "/api/styles/fast:candy/thumbnail",
        "/api/styles/painting:starry_night/thumbnail",
        "/api/styles/painting:starry_night/image",
    ]:
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", path


async def test_a_node_that_fails_everything_is_paused_and_shown(
    start: Start, clock: FakeClock
) -> None:
    client = await start(node_pause=PAUSE)
    reports = NodeReports(service(client))
    honest = FakeNode.connect(reports, name="honest")
    first = await create(client)
    finished, _ = await honest.finish(await honest.offer())
    assert finished
    busy = await create(client)
    hold = await honest.offer()
    assert hold.job_id == busy
    liar = FakeNode.connect(reports, name="liar")
    failed_jobs = []
    for _ in range(PAUSE_AFTER):
        job_id = await create(client)
        # The liar has not finished a job: it gets one once it waited for the busy honest node.
        clock.advance(Timeouts().probation_wait)
        reports.hub.seen(liar.handle)
        reports.hub.seen(honest.handle)
        service(client).tick()
        offer = await liar.offer()
        assert offer.job_id == job_id
        # It claims the input is invalid: the job is not failed outright, it waits for
        # the other node.
        assert reports.failed(liar.handle, offer.job_id, offer.lease, "invalid_input", retry=False)
        failed_jobs.append(job_id)
        assert (await state(client, job_id))["attempts"] == 1
    nodes = {n["name"]: n for n in (await (await client.get("/api/nodes")).json())["nodes"]}
    assert nodes["liar"]["paused"] and nodes["liar"]["state"] == "paused"
    assert not nodes["honest"]["paused"]
    page = await (await client.get("/status")).text()
    assert "paused" in page and "3 jobs in a row failed" in page and "10 min left" in page
    # The honest node runs every job the liar failed, and then a new one.
    assert (await honest.finish(hold))[0]
    done = []
    for _ in range(PAUSE_AFTER):
        offer = await honest.offer()
        done.append(offer.job_id)
        assert (await honest.finish(offer))[0]
    assert sorted(done) == sorted(failed_jobs)
    for job_id in [first, *failed_jobs]:
        assert (await state(client, job_id))["state"] == "done"
    # The pause ends on the clock.
    clock.advance(PAUSE + 1)
    reports.hub.seen(liar.handle)  # heartbeats kept coming
    reports.hub.seen(honest.handle)
    service(client).tick()
    nodes = {n["name"]: n for n in (await (await client.get("/api/nodes")).json())["nodes"]}
    assert not nodes["liar"]["paused"]


def test_a_failure_of_the_relays_own_making_blames_no_node() -> None:
    s = liar_and_honest()
    s.submit(job("a"), 1.0)
    first = where(s, "a")
    lost = "The job's images were lost."
    actions = s.failed(first, "a", lease(s, "a"), 2.0, reason=lost, retry=False, blame=False)
    assert actions == [Failed("a", lost)]
    for i in range(PAUSE_AFTER):
        s.submit(job(f"b{i}"), 3.0 + i)
        name = where(s, f"b{i}")
        s.failed(name, f"b{i}", lease(s, f"b{i}"), 3.0, reason=lost, retry=False, blame=False)
    assert all(v.paused_until is None for v in s.nodes())
