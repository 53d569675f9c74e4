"""The HTTP API end to end on a test client, with a fake node behind the node seam."""

import base64
import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from PIL import Image
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, jpeg, json_order, make_config, png
from relay_images import image_bytes, png_header_only

from relay.api import SERVICE
from relay.app import init
from relay.handles import CancelJob
from relay.jobs import JobService
from relay.reports import NodeReports

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]
JSON = {"Content-Type": "application/json"}


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


async def create(client: Client, **fields: str) -> dict[str, Any]:
    fields.setdefault("style", "painting:starry_night")
    resp = await client.post("/api/jobs", data=form(**fields))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 202, body
    return body


async def error(resp: Any, status: int) -> str:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error"}
    message: str = body["error"]
    return message


# ---- styles and help ---------------------------------------------------------------------


async def test_styles_list_paintings_limits_and_node_styles(start: Start) -> None:
    client = await start()
    body = await (await client.get("/api/styles")).json()
    ids = [s["id"] for s in body["styles"]]
    assert "painting:starry_night" in ids
    assert body["limits"]["max_epochs"] == 500
    assert body["limits"]["max_upload_bytes"] == 1024 * 1024
    assert body["limits"]["max_pixels"] == 1_000_000
    assert not any(m["available"] for m in body["methods"])
    thumb = await client.get(body["styles"][0]["thumbnail_url"])
    assert thumb.status == 200
    with Image.open(io.BytesIO(await thumb.read())) as img:
        assert max(img.size) == 256
    reports = NodeReports(service(client))
    FakeNode.connect(
        reports, max_epochs=300, thumbnails={"candy": jpeg()}, titles={"candy": "Candy"}
    )
    body = await (await client.get("/help")).json()
    fast = [s for s in body["styles"] if s["id"] == "fast:candy"]
    assert (fast[0]["methods"], fast[0]["name"]) == (["fast"], "Candy")
    assert (await client.get(fast[0]["thumbnail_url"])).status == 200
    gatys = next(m for m in body["methods"] if m["id"] == "gatys")
    assert (gatys["available"], gatys["max_epochs"]) == (True, 300)
    assert any("POST   /api/jobs" in line for line in body["endpoints"])


# ---- creating jobs -----------------------------------------------------------------------


async def test_create_multipart_waits_with_a_reason(start: Start) -> None:
    client = await start()
    body = await create(client, epochs="40", size="32", filename="cat photo.png")
    assert body["state"] == "queued"
    assert body["position"] == 1
    assert body["waiting_reason"] == "No node is online; the job starts when one connects."
    assert (body["width"], body["height"], body["epochs"]) == (32, 24, 40)
    assert len(base64.urlsafe_b64decode(body["id"] + "==")) == 16
    again = await (await client.get(f"/api/jobs/{body['id']}")).json()
    assert again["state"] == "queued"
    assert again["filename"] == "cat photo.png"
    content = await client.get(again["content_url"])
    with Image.open(io.BytesIO(await content.read())) as img:
        assert img.size == (32, 24)


async def test_create_json_with_data_url_and_style_upload(start: Start) -> None:
    client = await start()
    photo = "data:image/png;base64," + base64.b64encode(png((100, 50))).decode()
    style = base64.b64encode(image_bytes("JPEG", (80, 80))).decode()
    order = {"image": photo, "style_image": style, "method": "arbitrary", "size": 60}
    resp = await client.post("/transform", json=order)
    body = await resp.json()
    assert resp.status == 202, body
    assert (body["method"], body["width"], body["height"]) == ("arbitrary", 60, 30)
    assert body["styles"] == [{"id": "upload", "weight": 1.0}]
    assert body["epochs"] == 1


async def test_blend_weights_are_normalised(start: Start) -> None:
    client = await start()
    FakeNode.connect(service(client), styles=frozenset({"candy", "mosaic"}))
    order = json_order(
        style=[{"id": "fast:candy", "weight": 3}, {"id": "fast:mosaic", "weight": 1}]
    )
    resp = await client.post("/api/jobs", json=order)
    body = await resp.json()
    assert resp.status == 202, body
    assert body["method"] == "fast"
    assert body["styles"] == [
        {"id": "fast:candy", "weight": 0.75},
        {"id": "fast:mosaic", "weight": 0.25},
    ]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"style": "painting:mona_lisa"}, "Unknown style 'painting:mona_lisa'"),
        ({"style": "fast:nope"}, "Unknown style 'fast:nope'"),
        ({"method": "magic"}, "Unknown method 'magic'; choose one of gatys, fast, arbitrary"),
        ({"epochs": "501"}, "epochs 501 is above this relay's cap of 500 (max_epochs)"),
        ({"epochs": "zero"}, "`epochs` must be a whole number"),
        ({"size": "5000"}, "`size` must be a whole number between 16 and 2048 pixels"),
        ({"method": "fast"}, "Painting styles work with the gatys or arbitrary method"),
        ({"style": ""}, "Choose a style"),
        ({"optimizer": "sgd"}, "`optimizer` must be one of lbfgs, adam"),
        ({"email": "not an address"}, "does not look right"),
        ({"colour": "blue"}, "Unknown field 'colour'"),
    ],
)
async def test_bad_fields_are_400_with_a_message(
    start: Start, fields: dict[str, str], says: str
) -> None:
    client = await start()
    data = {"style": "painting:udnie", **fields}
    if not data["style"]:
        del data["style"]
    message = await error(await client.post("/api/jobs", data=form(**data)), 400)
    assert says in message


@pytest.mark.parametrize(
    ("content", "status", "says"),
    [
        (b"plain text, not a picture", 400, "The photo is not an image"),
        (image_bytes("GIF", (20, 20), "P"), 400, "is a GIF image"),
        (png_header_only(1200, 1000), 400, "1,200,000 pixels; the limit is 1,000,000"),
        (png_header_only(20_000, 20_000), 400, "decompression bomb"),
        (b"\x89PNG" + b"\x00" * (1024 * 1024 + 10), 413, "the limit is 1.0 MB per image"),
    ],
)
async def test_bad_uploads_multipart(start: Start, content: bytes, status: int, says: str) -> None:
    client = await start()
    resp = await client.post("/api/jobs", data=form(content, style="painting:udnie"))
    assert says in await error(resp, status)


async def test_too_many_style_images_are_refused_while_reading(start: Start) -> None:
    client = await start()
    data = form(method="gatys")
    for _ in range(5):
        data.add_field("style_image", io.BytesIO(png()), filename="s.png")
    resp = await client.post("/api/jobs", data=data)
    assert "At most 4 styles can be blended" in await error(resp, 400)


async def test_a_file_under_a_text_field_name_says_which_fields_take_files(start: Start) -> None:
    # `photo` is what many people would guess; it is a text field (unknown here).
    client = await start()
    data = FormData()
    data.add_field("photo", io.BytesIO(png()), filename="cat.png")
    data.add_field("style", "painting:udnie")
    message = await error(await client.post("/api/jobs", data=data), 400)
    assert "sent as field 'photo'" in message
    assert "Send the photo as `content` and style images as `style_image`" in message


async def test_a_text_field_too_long_says_it_is_a_text_field(start: Start) -> None:
    client = await start()
    resp = await client.post("/api/jobs", data=form(png(), style="x" * 20_000))
    message = await error(resp, 413)
    assert message == "Field 'style' is over 16,384 bytes, the most a text field takes."


async def test_bad_uploads_json(start: Start) -> None:
    client = await start()
    big = json.dumps(json_order(b"\x00" * (1024 * 1024 + 10), style="painting:udnie"))
    resp = await client.post("/api/jobs", data=io.BytesIO(big.encode()), headers=JSON)
    assert "limit is 1.0 MB" in await error(resp, 413)
    junk = {"image": "%%% not base64 %%%", "style": "painting:udnie"}
    assert "not valid base64" in await error(await client.post("/api/jobs", json=junk), 400)
    resp = await client.post(
        "/api/jobs", data=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert "not valid JSON" in await error(resp, 400)
    # A body far over every cap is refused from its Content-Length alone.
    huge = io.BytesIO(b"x" * (12 * 1024 * 1024))
    resp = await client.post("/api/jobs", data=huge, headers=JSON)
    assert "too large" in await error(resp, 413)


async def test_queue_full_is_503_with_retry_after(start: Start) -> None:
    client = await start(queue_capacity=2, retry_after=42)
    await create(client)
    await create(client)
    resp = await client.post("/api/jobs", data=form(style="painting:udnie"))
    assert "The queue is full (2 jobs waiting)" in await error(resp, 503)
    assert resp.headers["Retry-After"] == "42"


async def test_rate_limit_and_open_jobs_are_429(
    start: Start, clock: FakeClock, tmp_path: Path
) -> None:
    client = await start(rate_per_minute=2)
    await create(client)
    await create(client)
    resp = await client.post("/api/jobs", data=form(style="painting:udnie"))
    assert "Too many new jobs from your address" in await error(resp, 429)
    assert int(resp.headers["Retry-After"]) == 30
    clock.advance(60)
    await create(client)
    client2 = await start(max_open_jobs=1, data_dir=tmp_path / "other")
    await create(client2)
    resp = await client2.post("/api/jobs", data=form(style="painting:udnie"))
    assert "You already have 1 jobs queued or running" in await error(resp, 429)


async def test_trusted_proxy_header_separates_clients(start: Start) -> None:
    client = await start(max_open_jobs=1, trusted_proxy=("127.0.0.1",))
    for ip in ("203.0.113.5", "203.0.113.6"):
        resp = await client.post(
            "/api/jobs",
            data=form(style="painting:udnie"),
            headers={"X-Forwarded-For": f"1.2.3.4, {ip}"},
        )
        assert resp.status == 202
    resp = await client.post(
        "/api/jobs", data=form(style="painting:udnie"), headers={"X-Forwarded-For": "203.0.113.5"}
    )
    assert resp.status == 429


# ---- a job's life through the node seam --------------------------------------------------


async def test_job_runs_on_a_node_to_a_downloadable_result(start: Start) -> None:
    client = await start()
    job = await create(client, epochs="30", size="40", filename="../../etc/My Cat!.png")
    node = FakeNode.connect(service(client), name="gpu-home")
    offer = await node.offer()
    assert (offer.job_id, offer.method, offer.epochs) == (job["id"], "gatys", 30)
    with Image.open(io.BytesIO(offer.content_png)) as img:
        assert img.size == (offer.width, offer.height) == (40, 30)
    [(style_png, weight)] = offer.style_images
    with Image.open(io.BytesIO(style_png)) as img:
        # The Starry Night (1024×640) at the job's size.
        assert (img.size, weight) == ((40, 25), 1.0)
    url = f"/api/jobs/{job['id']}"
    running = await (await client.get(url)).json()
    assert (running["state"], running["node"], running["position"]) == ("running", "gpu-home", None)
    assert node.progress(offer, 3)
    assert await node.preview(offer)
    running = await (await client.get(url)).json()
    assert (running["epoch"], running["epochs"]) == (3, 30)
    assert running["losses"] == {"content": pytest.approx(1 / 3), "style": pytest.approx(2 / 3)}
    preview = await client.get(running["preview_url"])
    assert preview.content_type == "image/jpeg"
    nodes = await (await client.get("/api/nodes")).json()
    [listed] = nodes["nodes"]
    assert (listed["name"], listed["state"], listed["current_jobs"]) == (
        "gpu-home",
        "busy",
        [job["id"][:6]],
    )
    accepted, result_png = await node.finish(offer)
    assert accepted
    done = await (await client.get(url)).json()
    assert done["state"] == "done"
    assert done["finished"] is not None and done["expires"] is not None
    result = await client.get(done["result_url"])
    assert result.status == 200
    assert await result.read() == result_png
    assert result.headers["Content-Type"] == "image/png"
    assert result.headers["Content-Disposition"] == 'attachment; filename="My_Cat-stylized.png"'
    assert (await client.get(f"{url}/preview")).status == 200
    nodes = await (await client.get("/api/nodes")).json()
    assert (nodes["nodes"][0]["jobs_done"], nodes["nodes"][0]["state"]) == (1, "idle")
    assert "token" not in str(nodes).lower()
    # A duplicate result for the finished lease is ignored.
    assert not (await node.finish(offer))[0]


async def test_result_before_done_is_404(start: Start) -> None:
    client = await start()
    job = await create(client)
    assert "no result (queued)" in await error(
        await client.get(f"/api/jobs/{job['id']}/result"), 404
    )
    assert "No such job" in await error(await client.get("/api/jobs/unknown-id"), 404)


async def test_lost_node_requeues_and_old_lease_is_ignored(start: Start) -> None:
    client = await start()
    job = await create(client)
    reports = NodeReports(service(client))
    first = FakeNode.connect(reports, name="a")
    offer1 = await first.offer()
    first.lost()
    body = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert (body["state"], body["attempts"]) == ("queued", 1)
    second = FakeNode.connect(reports, name="b")
    offer2 = await second.offer()
    assert offer2.lease != offer1.lease
    assert not first.progress(offer1, 1)
    assert not (await first.finish(offer1))[0]
    assert (await second.finish(offer2))[0]
    body = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert (body["state"], body["node"]) == ("done", "b")


async def test_node_failure_without_retry_fails_the_job(start: Start) -> None:
    client = await start()
    job = await create(client)
    node = FakeNode.connect(service(client))
    offer = await node.offer()
    assert node.reports.failed(node.handle, offer.job_id, offer.lease, "out of memory", retry=False)
    body = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert (body["state"], body["error"]) == ("failed", "out of memory")


async def test_unreadable_result_is_retried_elsewhere(start: Start) -> None:
    client = await start()
    job = await create(client)
    node = FakeNode.connect(service(client))
    offer = await node.offer()
    reports = node.reports
    # Counted (the lease was current), as a failure: the lease ends and the job goes back.
    assert await reports.result(node.handle, offer.job_id, offer.lease, b"junk", width=1, height=1)
    assert not await reports.result(
        node.handle, offer.job_id, offer.lease, b"junk", width=1, height=1
    )
    body = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert body["attempts"] == 1
    again = await node.offer()
    assert again.lease != offer.lease


async def test_silent_node_times_out_and_job_returns_to_queue(
    start: Start, clock: FakeClock
) -> None:
    client = await start(stall_timeout=30.0)
    job = await create(client)
    node = FakeNode.connect(service(client))
    offer = await node.offer()
    clock.advance(31)
    node.reports.hub.seen(node.handle)  # heartbeats keep coming; progress does not
    service(client).tick()
    cancel = await node.cancel()
    assert (cancel.job_id, cancel.lease) == (offer.job_id, offer.lease)
    # The node confirms the stop; its slot is free again and the job comes back to it.
    assert not node.reports.failed(node.handle, offer.job_id, offer.lease, "stopped", retry=True)
    retry = await node.offer()
    assert retry.lease != offer.lease
    body = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert (body["state"], body["attempts"]) == ("running", 1)


async def test_node_missing_three_heartbeats_is_dropped(start: Start, clock: FakeClock) -> None:
    client = await start(heartbeat_interval=5.0)
    job = await create(client)
    reports = NodeReports(service(client))
    node = FakeNode.connect(reports)
    await node.offer()
    clock.advance(14)
    reports.hub.seen(node.handle)  # a heartbeat
    clock.advance(14)
    reports.check_silence()
    assert not node.handle.dropped.is_set()
    clock.advance(2)
    reports.check_silence()
    assert node.handle.dropped.is_set()
    assert node.handle.drop_reason == "missed 3 heartbeats (16 s silent)"
    body = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert (body["state"], body["attempts"]) == ("queued", 1)
    assert (await client.get("/api/nodes")).status == 200
    assert (await (await client.get("/api/nodes")).json())["nodes"] == []


async def test_reconnecting_node_replaces_its_old_connection(start: Start) -> None:
    client = await start()
    reports = NodeReports(service(client))
    old = FakeNode.connect(reports, name="gpu")
    new = FakeNode.connect(reports, name="gpu")
    assert old.handle.dropped.is_set()
    assert not new.handle.dropped.is_set()
    old.lost()  # the old connection closing later must not remove the new one
    assert [n["name"] for n in (await (await client.get("/api/nodes")).json())["nodes"]] == ["gpu"]


async def test_cancel_queued_and_running(start: Start) -> None:
    client = await start()
    queued = await create(client)
    resp = await client.delete(f"/api/jobs/{queued['id']}")
    assert (await resp.json())["state"] == "cancelled"
    # A second DELETE of the ended job deletes it (see test_relay_delete_now.py).
    assert (await client.delete(f"/api/jobs/{queued['id']}")).status == 204
    await error(await client.get(f"/api/jobs/{queued['id']}"), 404)
    running = await create(client)
    waiting = await create(client)
    node = FakeNode.connect(service(client))
    offer = await node.offer()
    assert offer.job_id == running["id"]
    resp = await client.delete(f"/api/jobs/{running['id']}")
    assert (await resp.json())["state"] == "cancelled"
    cmd = await node.command()
    assert cmd == CancelJob(running["id"], offer.lease)
    # The cancelled job's late result is ignored; it frees the slot for the next job.
    assert not (await node.finish(offer))[0]
    assert (await node.offer()).job_id == waiting["id"]


async def test_declined_offer_is_offered_to_another_node(start: Start) -> None:
    client = await start()
    job = await create(client)
    reports = NodeReports(service(client))
    picky = FakeNode.connect(reports, name="picky")
    offer = await picky.offer()
    assert reports.declined(picky.handle, offer.job_id, offer.lease, "over my cap")
    body = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert body["state"] == "queued"
    assert "picky: over my cap" in body["waiting_reason"]
    other = FakeNode.connect(reports, name="other")
    assert (await other.offer()).job_id == job["id"]


# ---- restart and expiry ------------------------------------------------------------------


async def test_restart_brings_back_queued_and_running_keeps_done(
    aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock
) -> None:
    config = make_config(tmp_path)
    client = await aiohttp_client(init(config, clock, clock))
    done = await create(client)
    node = FakeNode.connect(service(client))
    _, result_png = await node.finish(await node.offer())
    running = await create(client)
    await node.offer()
    queued = await create(client)
    await client.close()

    client = await aiohttp_client(init(config, clock, clock))
    states = {}
    for job in (done, running, queued):
        body = await (await client.get(f"/api/jobs/{job['id']}")).json()
        states[job["id"]] = (body["state"], body["position"])
    assert states == {
        done["id"]: ("done", None),
        running["id"]: ("queued", 1),
        queued["id"]: ("queued", 2),
    }
    assert await (await client.get(f"/api/jobs/{done['id']}/result")).read() == result_png
    node = FakeNode.connect(service(client))
    assert (await node.offer()).job_id == running["id"]


async def test_sweeper_removes_expired_results(start: Start, clock: FakeClock) -> None:
    client = await start(result_ttl=3600.0)
    job = await create(client)
    keep = await create(client)
    node = FakeNode.connect(service(client))
    offer = await node.offer()
    await node.finish(offer)
    await node.offer()  # `keep` is now running and must survive
    svc = service(client)
    record = svc.get(job["id"])
    assert record.result_file is not None
    result_path = svc.blobs.path(record.result_file)
    assert result_path.exists()
    clock.advance(3599)
    assert await svc.sweep() == 0
    clock.advance(2)
    assert await svc.sweep() == 1
    assert "No such job" in await error(await client.get(f"/api/jobs/{job['id']}"), 404)
    assert not result_path.exists()
    kept = svc.get(keep["id"])
    assert svc.blobs.exists(kept.content_file)


# ---- page, health, errors ----------------------------------------------------------------


async def test_page_health_and_json_errors(start: Start, tmp_path: Path) -> None:
    web_dir = tmp_path / "web"
    web_dir.mkdir()
    (web_dir / "index.html").write_text("<h1>Stylerelay</h1>")
    (web_dir / "app.mjs").write_text("export {};")
    (web_dir / "__init__.py").write_text("")
    client = await start(web_dir=web_dir)
    assert await (await client.get("/")).text() == "<h1>Stylerelay</h1>"
    assert (await client.get("/app.mjs")).content_type == "text/javascript"
    assert "Nothing here" in await error(await client.get("/__init__.py"), 404)
    assert "Nothing here" in await error(await client.get("/../secret"), 404)
    health = await (await client.get("/healthz")).json()
    assert health == {"status": "ok", "disk": "ok", "nodes": 0, "queued": 0, "running": 0}
    assert "PUT is not allowed" in await error(await client.put("/api/jobs/x"), 405)
    resp = await client.post("/api/jobs", data=b"x", headers={"Content-Type": "text/plain"})
    assert "multipart/form-data or application/json" in await error(resp, 400)


async def test_nodes_report_their_measured_gatys_speed(start: Start, clock: FakeClock) -> None:
    client = await start()
    node = FakeNode.connect(service(client), name="gpu-home")
    listed = (await (await client.get("/api/nodes")).json())["nodes"][0]
    assert listed["seconds_per_epoch_mp"] is None
    await create(client, epochs="30", size="40")
    offer = await node.offer()
    clock.advance(12.0)
    assert (await node.finish(offer))[0]
    listed = (await (await client.get("/api/nodes")).json())["nodes"][0]
    # 12 s for 30 epochs (and the start-up's 2) of a 40x30 picture: 12 / (32 * 0.0012 MP).
    assert listed["seconds_per_epoch_mp"] == pytest.approx(12 / (32 * 40 * 30 / 1e6))
