"""Issue 11, hardening: jobs no connected node can run take only a share of the queue.

A flood of jobs for a method (style, size) no node offers once filled the whole queue, and
everyone else's jobs, which the connected nodes would have run at once, got 503 "queue
full". Now at most `--queue-unservable` such jobs wait; beyond that they are refused with
the reason, while jobs a connected node can run are admitted up to the full capacity.
"""

import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, make_config

from relay.api import SERVICE
from relay.app import init
from relay.config import Config
from relay.dispatch import JobTicket, NodeInfo, no_room_to_wait, unfit
from relay.errors import ConfigError
from relay.jobs import JobService
from relay.reports import NodeReports
from relay.scheduler import Scheduler

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]
PAINTING = "painting:starry_night"
FLOODER, OTHER = "203.0.113.7", "198.51.100.9"
NO_GATYS = frozenset({"fast", "arbitrary"})


@pytest.fixture
def start(aiohttp_client: AiohttpClient, tmp_path: Path) -> Start:
    """A relay behind a trusted proxy (clients told apart by X-Forwarded-For); call again
    to restart it on the same data dir."""
    clock = FakeClock()

    async def go(**changes: Any) -> Client:
        config = make_config(tmp_path, trusted_proxy=("127.0.0.1/32",), **changes)
        return await aiohttp_client(init(config, clock, clock))

    return go


def service(client: Client) -> JobService:
    return client.app[SERVICE]


async def post(client: Client, address: str, **fields: str) -> tuple[int, dict[str, Any], Any]:
    fields.setdefault("style", PAINTING)
    headers = {"X-Forwarded-For": address}
    resp = await client.post("/api/jobs", data=form(**fields), headers=headers)
    body: dict[str, Any] = await resp.json()
    return resp.status, body, resp.headers


async def accepted(client: Client, address: str, **fields: str) -> dict[str, Any]:
    status, body, _ = await post(client, address, **fields)
    assert status == 202, body
    return body


async def state(client: Client, job_id: str) -> str:
    body: dict[str, Any] = await (await client.get(f"/api/jobs/{job_id}")).json()
    return str(body["state"])


REFUSED_GATYS = (
    "No connected node can run this job now (no connected node offers the gatys method), "
    "and 2 jobs already wait for one; try again later or choose another method."
)


async def test_unservable_jobs_beyond_their_share_are_refused_and_others_still_get_in(
    start: Start,
) -> None:
    client = await start(queue_capacity=6, queue_unservable=2, retry_after=17)
    FakeNode.connect(service(client), methods=NO_GATYS)
    await accepted(client, FLOODER, method="gatys")
    await accepted(client, FLOODER, method="gatys")
    status, body, headers = await post(client, FLOODER, method="gatys")
    assert status == 503
    assert body == {"error": REFUSED_GATYS}
    assert headers["Retry-After"] == "17"
    assert service(client).scheduler.unservable == 2

    # Another client's job the node runs gets in, and so do more, up to the full queue:
    # one runs on the node's single slot, four wait beside the two gatys jobs.
    for _ in range(5):
        await accepted(client, OTHER, method="arbitrary")
    assert service(client).scheduler.queued == 6
    status, body, _ = await post(client, OTHER, method="arbitrary")
    assert status == 503
    assert body["error"].startswith("The queue is full (6 jobs waiting)")


async def test_each_reason_is_named_with_what_the_person_can_change(start: Start) -> None:
    client = await start(queue_unservable=1)
    FakeNode.connect(service(client), max_epochs=100)
    await accepted(client, FLOODER, method="gatys", epochs="300")
    status, body, _ = await post(client, OTHER, method="gatys", epochs="200")
    assert status == 503
    assert body["error"] == (
        "No connected node can run this job now (200 epochs is above every connected "
        "node's cap (the highest is 100)), and 1 jobs already wait for one; try again later "
        "or ask for at most 100 epochs."
    )
    # A job within the node's caps is not held back by the share.
    await accepted(client, OTHER, method="gatys", epochs="100")


async def test_a_node_that_can_run_them_makes_room(start: Start) -> None:
    client = await start(queue_unservable=2)
    reports = NodeReports(service(client))
    FakeNode.connect(reports, methods=NO_GATYS)
    waiting = [(await accepted(client, FLOODER, method="gatys"))["id"] for _ in range(2)]
    assert (await post(client, OTHER, method="gatys"))[0] == 503

    gatys = FakeNode.connect(reports, "gpu-2", methods=frozenset({"gatys"}))
    offer = await gatys.offer()
    assert offer.job_id == waiting[0]
    # One runs, one waits for the same node's slot: neither counts against the share now.
    assert service(client).scheduler.unservable == 0
    await accepted(client, OTHER, method="gatys")


async def test_queued_jobs_stay_when_the_node_that_could_run_them_leaves(start: Start) -> None:
    client = await start(queue_unservable=2)
    reports = NodeReports(service(client))
    FakeNode.connect(reports, methods=NO_GATYS)
    gatys = FakeNode.connect(reports, "gpu-2", methods=frozenset({"gatys"}))
    jobs = [(await accepted(client, FLOODER, method="gatys"))["id"] for _ in range(3)]
    await gatys.offer()
    assert service(client).scheduler.unservable == 0

    gatys.lost()
    # Admission is limited; what already waits is not thrown out (its queue timeout ends it).
    assert [await state(client, j) for j in jobs] == ["queued"] * 3
    assert service(client).scheduler.unservable == 3
    status, body, _ = await post(client, OTHER, method="gatys")
    assert status == 503
    assert "and 3 jobs already wait for one" in body["error"]
    await accepted(client, OTHER, method="arbitrary")


async def test_recovered_jobs_are_kept_beyond_the_share(start: Start) -> None:
    client = await start(queue_unservable=5)
    jobs = [(await accepted(client, FLOODER, method="gatys"))["id"] for _ in range(3)]
    await client.close()

    client = await start(queue_unservable=1)
    assert [await state(client, j) for j in jobs] == ["queued"] * 3
    status, body, _ = await post(client, OTHER, method="gatys")
    assert status == 503
    assert body["error"] == (
        "No connected node can run this job now (no node is online), and 3 jobs already "
        "wait for one; try again later."
    )
    FakeNode.connect(service(client), methods=NO_GATYS)
    await accepted(client, OTHER, method="arbitrary")


# ---- the scheduler's count ---------------------------------------------------------------


def spec(job_id: str, method: str = "gatys", epochs: int = 10, pixels: int = 64) -> JobTicket:
    return JobTicket(job_id, "alice", method, epochs, pixels)


def test_the_scheduler_counts_queued_jobs_no_serving_node_fits() -> None:
    s = Scheduler()
    s.submit(spec("a"), 0.0)
    s.submit(spec("b", "fast"), 0.0)
    assert s.unservable == 2  # no node at all
    s.node_up(NodeInfo("fast-1", methods=frozenset({"fast"}), slots=1), 1.0)
    assert s.unservable == 1  # "b" runs there
    s.submit(spec("c", "fast"), 1.0)
    assert s.unservable == 1  # "c" waits for the busy node: it could run it
    s.node_up(NodeInfo("gatys-1", methods=frozenset({"gatys"}), max_epochs=50), 2.0)
    assert s.unservable == 0
    s.submit(spec("d", epochs=100), 2.0)
    assert s.unservable == 1  # above the only gatys node's cap
    assert s.unfit(spec("e", epochs=100)) == (
        "100 epochs is above every connected node's cap (the highest is 50).",
        "ask for at most 50 epochs",
    )
    assert s.unfit(spec("e", epochs=50)) is None
    s.node_draining("fast-1")
    assert s.unservable == 2  # "c" now waits for a node that takes nothing new
    s.cancel("c", 3.0)
    assert s.unservable == 1
    s.node_down("gatys-1", 4.0)
    assert s.unservable == 2  # "a" ran there and is back in the queue, beside "d"
    assert s.queued == 2


def walk(s: Scheduler, jobs: list[JobTicket], serving: list[NodeInfo]) -> int:
    """The count the slow way: every queued job against every serving node."""
    queued = [j for j in jobs if s.position(j.id) is not None]
    return sum(1 for j in queued if unfit(j, serving) is not None)


def test_the_count_matches_a_walk_through_the_queue_whatever_happens() -> None:
    rnd = random.Random(11)
    s = Scheduler()
    nodes: dict[str, NodeInfo] = {}
    draining: set[str] = set()
    jobs: list[JobTicket] = []
    methods = ("gatys", "fast", "arbitrary")
    now = 0.0
    for step in range(600):
        now += 1.0
        roll = rnd.random()
        if roll < 0.45:
            job = JobTicket(
                f"j{step}",
                rnd.choice(("ann", "bo", "cy")),
                rnd.choice(methods),
                rnd.choice((10, 100, 1000)),
                rnd.choice((64, 10**6, 4 * 10**6)),
            )
            s.submit(job, now)
            jobs.append(job)
        elif roll < 0.6:
            name = f"n{rnd.randrange(4)}"
            info = NodeInfo(
                name,
                methods=frozenset(rnd.sample(methods, rnd.randint(1, 3))),
                max_epochs=rnd.choice((50, 500, 1000)),
                max_pixels=rnd.choice((10**6, 4 * 10**6)),
                slots=rnd.randint(1, 2),
            )
            s.node_up(info, now)
            nodes[name] = info
            draining.discard(name)
        elif roll < 0.7 and nodes:
            name = rnd.choice(sorted(nodes))
            s.node_down(name, now, deliberate=rnd.random() < 0.5)
            del nodes[name]
            draining.discard(name)
        elif roll < 0.75 and nodes:
            name = rnd.choice(sorted(nodes))
            s.node_draining(name)
            draining.add(name)
        elif roll < 0.85 and jobs:
            s.cancel(rnd.choice(jobs).id, now)
        elif jobs:
            job_id = rnd.choice(jobs).id
            lease = s.lease_of(job_id)
            if lease is not None:
                s.finished(lease[0], job_id, lease[1], now)
        serving = [info for name, info in nodes.items() if name not in draining]
        assert s.unservable == walk(s, jobs, serving), step


def test_the_refusal_reads_well_for_every_reason() -> None:
    node = NodeInfo("n", methods=frozenset({"fast"}), styles=frozenset({"candy"}))
    found = unfit(JobTicket("j", "c", "fast", 1, 64, frozenset({"mosaic"})), [node])
    assert found is not None
    assert no_room_to_wait(*found, 50) == (
        "No connected node can run this job now (no connected node has the style "
        "fast:mosaic), and 50 jobs already wait for one; try again later or choose another "
        "style."
    )
    found = unfit(JobTicket("j", "c", "fast", 1, 5_000_000), [node])
    assert found is not None
    assert no_room_to_wait(*found, 7).endswith(
        "(the most is 4,000,000)), and 7 jobs already wait for one; try again later or "
        "choose a smaller size."
    )


def test_the_share_is_a_setting() -> None:
    assert Config().queue_unservable == 50
    assert Config.load({"queue_unservable": "0"}, {}).queue_unservable == 0
    assert Config.load({}, {"STYLERELAY_QUEUE_UNSERVABLE": "120"}).queue_unservable == 120
    with pytest.raises(ConfigError, match="--queue-unservable"):
        Config.load({"queue_unservable": "-1"}, {})
