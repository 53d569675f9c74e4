"""Honest estimates: a node's pace in Hello (with and without it), the node's warm-up, the
relay's view of the pace and its refinement by a real job, a queued job's start estimate,
and the page's formula agreeing with the relay's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, make_config, png

from gpu_node.engine.pace import gatys_pace
from protocol import Capabilities, Connection, Hello, LocalProtocolError, Pace, Role
from relay import estimates
from relay.api import SERVICE
from relay.app import init
from relay.nodewire import node_info
from relay.reports import NodeReports

Client = TestClient[web.Request, web.Application]
ROOT = Path(__file__).resolve().parent.parent


def hello(pace: tuple[Pace, ...]) -> Hello:
    caps = Capabilities("CPU", 0, ("gatys",), (), 1000, 2**22, 1, pace)
    return Hello((1,), "n", "", "", caps)


@pytest.mark.parametrize("pace", [(), (Pace("gatys", 0.05, 12.5), Pace("fast", 0.5, 3.0))])
def test_hello_round_trips_with_and_without_a_pace(pace: tuple[Pace, ...]) -> None:
    relay, node = Connection(Role.RELAY), Connection(Role.NODE)
    assert relay.receive_data(node.send(hello(pace))) == [hello(pace)]


def test_a_hello_without_pace_leaves_the_key_out_for_older_relays() -> None:
    data = Connection(Role.NODE).send(hello(()))
    assert b"pace" not in data
    assert b"pace" in Connection(Role.NODE).send(hello((Pace("gatys", 0.0, 1.0),)))


def test_a_negative_pace_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="seconds_per_mp"):
        Pace("gatys", 0.1, -1.0)


def test_the_warm_up_measures_a_pace_on_the_cpu() -> None:
    seconds, per_mp = gatys_pace(torch.device("cpu"))
    assert seconds >= 0 and per_mp > 0
    # A 512 px epoch costs more than a 128 px one, and neither is absurd for a CPU.
    small = estimates.job_seconds((seconds, per_mp), "gatys", 10, 128 * 96)
    big = estimates.job_seconds((seconds, per_mp), "gatys", 10, 512 * 384)
    assert 0 < small < big < 10 * 60


def test_the_relay_takes_the_pace_from_hello() -> None:
    info = node_info("n", hello((Pace("gatys", 0.05, 12.5),)))
    assert info.pace == {"gatys": (0.05, 12.5)}
    assert node_info("n", hello(())).pace == {}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock) -> Client:
    return await aiohttp_client(init(make_config(tmp_path), clock, clock))


async def create(client: Client, **fields: str) -> dict[str, Any]:
    fields.setdefault("style", "painting:starry_night")
    resp = await client.post("/api/jobs", data=form(**fields))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 202, body
    return body


async def nodes(client: Client) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = (await (await client.get("/api/nodes")).json())["nodes"]
    return listed


async def test_nodes_show_their_pace_and_a_job_corrects_it(
    client: Client, clock: FakeClock
) -> None:
    reports = NodeReports(client.app[SERVICE])
    node = FakeNode.connect(reports, name="cpu", pace={"gatys": (0.5, 10.0)})
    listed = (await nodes(client))[0]
    assert listed["pace"] == {"gatys": {"seconds": 0.5, "seconds_per_mp": 10.0}}
    assert listed["seconds_per_epoch_mp"] == 10.0
    job = await create(client, epochs="30", size="40")
    offer = await node.offer()
    pixels = offer.width * offer.height
    expected = estimates.job_seconds((0.5, 10.0), "gatys", 30, pixels)
    clock.advance(2 * expected)  # the real job took twice as long as the warm-up said
    assert (await node.finish(offer))[0]
    pace = (await nodes(client))[0]["pace"]["gatys"]
    after = estimates.job_seconds((pace["seconds"], pace["seconds_per_mp"]), "gatys", 30, pixels)
    assert after == pytest.approx(2 * expected, rel=1e-3)
    assert job["id"]


async def test_a_queued_job_says_when_it_should_start(client: Client, clock: FakeClock) -> None:
    reports = NodeReports(client.app[SERVICE])
    node = FakeNode.connect(reports, name="cpu", pace={"gatys": (0.0, 100.0)})
    first = await create(client, epochs="8", size="100")
    offer = await node.offer()
    second = await create(client, epochs="8", size="100")
    third = await create(client, epochs="8", size="100")
    pixels = offer.width * offer.height
    one = estimates.job_seconds((0.0, 100.0), "gatys", 8, pixels)
    clock.advance(one / 4)
    view = await (await client.get(f"/api/jobs/{third['id']}")).json()
    assert view["position"] == 2
    # A quarter of the running job is done; the second job waits before the third.
    assert view["starts_in"] == pytest.approx(one * 3 / 4 + one, abs=0.1)
    running = await (await client.get(f"/api/jobs/{first['id']}")).json()
    assert running["starts_in"] is None
    assert second["id"]


async def test_no_paced_node_means_no_start_estimate(client: Client) -> None:
    FakeNode.connect(client.app[SERVICE], name="old", slots=1)
    await create(client, epochs="8", size="100")
    job = await create(client, epochs="8", size="100")
    view = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert view["state"] == "queued" and view["starts_in"] is None


SAMPLES = [
    ((0.05, 12.5), "gatys", 200, 512 * 384),
    ((0.0, 3.0), "gatys", 1, 128 * 128),
    ((0.3, 4.0), "fast", 1, 1024 * 768),
    ((1.25, 0.0), "arbitrary", 1, 640 * 480),
]


def test_the_page_and_the_relay_agree_on_the_formula() -> None:
    script = (
        "import { jobSeconds } from './web/js/speed.js';"
        f"const samples = {json.dumps(SAMPLES)};"
        "console.log(JSON.stringify(samples.map(([p, m, e, px]) =>"
        " jobSeconds({ seconds: p[0], seconds_per_mp: p[1] }, m, e, px))));"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    page = json.loads(out.stdout)
    relay = [estimates.job_seconds(p, m, e, px) for p, m, e, px in SAMPLES]
    assert page == pytest.approx(relay, rel=1e-12)


async def test_a_resumed_job_corrects_the_pace_by_the_epochs_it_ran(
    client: Client, clock: FakeClock
) -> None:
    service = client.app[SERVICE]
    reports = NodeReports(service)
    first = FakeNode.connect(reports, name="lost", pace={"gatys": (0.5, 10.0)})
    job = await create(client, epochs="30", size="40")
    offer = await first.offer()
    picture = png((offer.width, offer.height))
    kept = await reports.checkpoint(
        first.handle, offer.job_id, offer.lease, 20, picture, width=offer.width,
        height=offer.height,
    )  # fmt: skip
    assert kept
    first.lost()
    second = FakeNode.connect(reports, name="rescuer", pace={"gatys": (0.5, 10.0)})
    resumed = await second.offer()
    assert resumed.job_id == job["id"] and resumed.start_epoch == 20
    pixels = resumed.width * resumed.height
    expected = estimates.job_seconds((0.5, 10.0), "gatys", 10, pixels)  # 10 epochs were left
    clock.advance(2 * expected)
    assert (await second.finish(resumed))[0]
    pace = next(n for n in await nodes(client) if n["name"] == "rescuer")["pace"]["gatys"]
    after = estimates.job_seconds((pace["seconds"], pace["seconds_per_mp"]), "gatys", 10, pixels)
    assert after == pytest.approx(2 * expected, rel=1e-3)
