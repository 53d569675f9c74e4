"""`POST /api/jobs?wait=SECONDS` and the seeds' `/transform` body, on the real app with a
fake node behind the node seam."""

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, json_order, make_config, png

from relay import seeds
from relay.api import SERVICE
from relay.app import init
from relay.errors import BadRequest
from relay.jobs import JobService

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]


@pytest.fixture
def start(aiohttp_client: AiohttpClient, tmp_path: Path) -> Start:
    async def go(**changes: Any) -> Client:
        clock = FakeClock()
        return await aiohttp_client(init(make_config(tmp_path, **changes), clock, clock))

    return go


def service(client: Client) -> JobService:
    return client.app[SERVICE]


async def finish_next(node: FakeNode) -> bytes:
    offer = await node.offer()
    ok, data = await node.finish(offer)
    assert ok
    return data


async def test_wait_answers_with_the_ended_job(start: Start) -> None:
    client = await start()
    node = FakeNode.connect(service(client))
    worker = asyncio.create_task(finish_next(node))
    resp = await client.post("/api/jobs?wait=10", data=form(style="painting:udnie"))
    body = await resp.json()
    assert resp.status == 200, body
    assert body["state"] == "done"
    assert body["result_url"] == f"/api/jobs/{body['id']}/result"
    assert resp.headers["Location"] == f"/api/jobs/{body['id']}"
    await worker
    assert service(client).bus.subscribers == 0


async def test_wait_with_accept_png_answers_with_the_image(start: Start) -> None:
    client = await start()
    node = FakeNode.connect(service(client))
    worker = asyncio.create_task(finish_next(node))
    headers = {"Accept": "image/png"}
    resp = await client.post(
        "/api/jobs?wait=10", data=form(style="painting:udnie"), headers=headers
    )
    assert resp.status == 200
    assert resp.content_type == "image/png"
    assert await resp.read() == await worker
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_failed_job_within_the_wait_answers_with_its_view(start: Start) -> None:
    client = await start()
    node = FakeNode.connect(service(client))

    async def fail() -> None:
        offer = await node.offer()
        node.reports.failed(node.handle, offer.job_id, offer.lease, "out of memory", retry=False)

    worker = asyncio.create_task(fail())
    headers = {"Accept": "image/png"}
    resp = await client.post(
        "/api/jobs?wait=10", data=form(style="painting:udnie"), headers=headers
    )
    await worker
    body = await resp.json()
    assert resp.status == 200, body
    assert body["state"] == "failed"


async def test_a_job_not_ended_within_the_wait_is_the_usual_202(start: Start) -> None:
    client = await start()
    resp = await client.post("/api/jobs?wait=0.2", data=form(style="painting:udnie"))
    body = await resp.json()
    assert resp.status == 202, body
    assert body["state"] == "queued"
    assert service(client).bus.subscribers == 0


@pytest.mark.parametrize("value", ["61", "-1", "soon", "nan", "inf", "1" * 30, ""])
async def test_bad_wait_values_are_400(start: Start, value: str) -> None:
    client = await start()
    resp = await client.post(f"/api/jobs?wait={value}", data=form(style="painting:udnie"))
    body = await resp.json()
    assert resp.status == 400
    assert "`wait`" in body["error"]
    assert service(client).scheduler.queued == 0


async def test_a_client_that_leaves_while_waiting_frees_its_subscription(tmp_path: Path) -> None:
    # Served as `relay.server` serves it: aiohttp does not cancel the handler of a client
    # that hangs up (the test client's server would, and hide the problem).
    runner = web.AppRunner(init(make_config(tmp_path)), handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    svc = runner.app[SERVICE]
    try:
        async with ClientSession() as session:
            url = f"http://127.0.0.1:{port}/api/jobs?wait=60"
            pending = asyncio.create_task(session.post(url, data=form(style="painting:udnie")))
            async with asyncio.timeout(5):
                while svc.bus.subscribers == 0:
                    await asyncio.sleep(0.01)
            pending.cancel()  # the client hangs up
            await asyncio.gather(pending, return_exceptions=True)
        async with asyncio.timeout(5):
            while svc.bus.subscribers:
                await asyncio.sleep(0.05)
        assert svc.scheduler.queued == 1  # the job goes on, as one sent without `wait`
    finally:
        await runner.cleanup()


# ---- the seeds' /transform ---------------------------------------------------------------


def seed_body(model: str) -> dict[str, Any]:
    photo = base64.b64encode(png()).decode()
    return {"email": "ana@example.org", "filename": "cat.png", "image": photo, "model": model}


@pytest.mark.parametrize(
    ("model", "style", "method"),
    [
        ("candy", "fast:candy", "fast"),
        ("fast:candy", "fast:candy", "fast"),
        ("starry_night", "painting:starry_night", "gatys"),
        ("painting:udnie", "painting:udnie", "gatys"),
    ],
)
async def test_transform_takes_the_seeds_body(
    start: Start, model: str, style: str, method: str
) -> None:
    client = await start()
    FakeNode.connect(service(client))
    resp = await client.post("/transform", json=seed_body(model))
    body = await resp.json()
    assert resp.status == 202, body
    assert [s["id"] for s in body["styles"]] == [style]
    assert body["method"] == method
    assert body["filename"] == "cat.png"


async def test_transform_refuses_an_unknown_model(start: Start) -> None:
    client = await start()
    resp = await client.post("/transform", json=seed_body("mona_lisa"))
    assert resp.status == 400
    assert "Unknown model 'mona_lisa'" in (await resp.json())["error"]


async def test_transform_takes_model_in_a_form_too(start: Start) -> None:
    client = await start()
    resp = await client.post("/transform", data=form(model="udnie"))
    assert resp.status == 202, await resp.text()


async def test_api_jobs_still_refuses_model(start: Start) -> None:
    client = await start()
    resp = await client.post("/api/jobs", json=json_order(model="udnie"))
    assert resp.status == 400
    assert "Unknown field 'model'" in (await resp.json())["error"]


def test_bare_names_prefer_builtin_fast_styles() -> None:
    names = {"trained:candy", "builtin:candy", "builtin:mosaic"}
    assert seeds.model_style("candy", names) == "fast:builtin:candy"
    assert seeds.model_style("fast:trained:candy", names) == "fast:trained:candy"
    assert seeds.model_style("udnie", names) == "painting:udnie"
    with pytest.raises(BadRequest):
        seeds.model_style(3, names)


async def test_index_serves_the_page(start: Start) -> None:
    client = await start()
    index = await client.get("/index")
    root = await client.get("/")
    assert index.status == 200
    assert await index.read() == await root.read()
    assert index.content_type == "text/html"
