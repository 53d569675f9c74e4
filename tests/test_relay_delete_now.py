"""Privacy, "Delete now": DELETE on an ended job removes it and its files at once (204);
files another live job shares stay. DELETE on a queued or running job still cancels it."""

import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, json_order, make_config, png

from relay.api import SERVICE
from relay.app import init
from relay.jobs import JobService

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]

PHOTO = png((64, 48), (10, 120, 200))
OWN_STYLE = png((40, 40), (200, 30, 90))
OTHER_STYLE = png((40, 40), (30, 200, 90))


@pytest.fixture
def start(aiohttp_client: AiohttpClient, tmp_path: Path) -> Start:
    clock = FakeClock()

    async def go() -> Client:
        return await aiohttp_client(init(make_config(tmp_path), clock, clock))

    return go


def service(client: Client) -> JobService:
    return client.app[SERVICE]


async def create(client: Client, style: bytes) -> str:
    order = json_order(
        PHOTO, style_image=base64.b64encode(style).decode(), method="arbitrary", size=60
    )
    resp = await client.post("/api/jobs", json=order)
    body: dict[str, Any] = await resp.json()
    assert resp.status == 202, body
    job_id: str = body["id"]
    return job_id


async def reads(client: Client, job_id: str) -> list[int]:
    paths = ("", "/result", "/content", "/preview", "/style/0")
    return [(await client.get(f"/api/jobs/{job_id}{p}")).status for p in paths]


async def test_delete_now_removes_a_done_job_and_the_files_no_live_job_shares(
    start: Start,
) -> None:
    client = await start()
    svc = service(client)
    done_id = await create(client, OWN_STYLE)
    node = FakeNode.connect(svc)
    offer = await node.offer()
    assert await node.preview(offer)
    assert (await node.finish(offer))[0]
    done = svc.get(done_id)
    assert done.result_file and done.preview_file and done.state.final
    # Another job, still queued, sends the same photo: that one file must stay.
    waiting_id = await create(client, OTHER_STYLE)
    waiting = svc.get(waiting_id)
    assert waiting.content_file == done.content_file
    assert await reads(client, done_id) == [200, 200, 200, 200, 200]

    resp = await client.delete(f"/api/jobs/{done_id}")
    assert resp.status == 204
    assert await reads(client, done_id) == [404, 404, 404, 404, 404]
    gone = [done.result_file, done.preview_file, *done.style_files]
    assert not any(svc.blobs.exists(sha) for sha in gone)  # at once, not at the next sweep
    assert svc.blobs.exists(done.content_file)
    assert (await client.get(f"/api/jobs/{waiting_id}/content")).status == 200
    assert (await client.delete(f"/api/jobs/{done_id}")).status == 404

    # A queued job: DELETE cancels it (and answers its view); a second DELETE deletes it.
    resp = await client.delete(f"/api/jobs/{waiting_id}")
    assert resp.status == 200 and (await resp.json())["state"] == "cancelled"
    assert (await client.delete(f"/api/jobs/{waiting_id}")).status == 204
    assert (await client.get(f"/api/jobs/{waiting_id}")).status == 404
    assert not any(svc.blobs.exists(sha) for sha in [done.content_file, *waiting.style_files])
    assert svc.disk.usage.client_bytes("127.0.0.1") == 0


async def test_delete_now_on_a_failed_job(start: Start) -> None:
    client = await start()
    svc = service(client)
    job_id = await create(client, OWN_STYLE)
    node = FakeNode.connect(svc)
    offer = await node.offer()
    node.lost()  # the job goes back to the queue
    for _ in range(5):
        if svc.get(job_id).state.final:
            break
        other = FakeNode.connect(svc, name=f"n{_}")
        offer = await other.offer()
        other.lost()
    assert offer.job_id == job_id
    assert str(svc.get(job_id).state) == "failed"
    job = svc.get(job_id)
    resp = await client.delete(f"/api/jobs/{job_id}")
    assert resp.status == 204
    assert (await client.get(f"/api/jobs/{job_id}")).status == 404
    assert not any(svc.blobs.exists(sha) for sha in job.files())
