"""The public gallery: consent, listing, moderation, keeping and letting go (relay.showcase)."""

import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, make_config, png

from relay.api import SERVICE
from relay.app import init
from relay.cli import main as cli_main
from relay.jobs import JobService
from relay.showcase import PAGE_SIZE, THUMB_SIDE, Item, Showcase, ShowcaseStore

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]
DAY = 86400.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start(aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock) -> Start:
    async def go(**changes: Any) -> Client:
        changes.setdefault("trusted_proxy", ("127.0.0.1",))
        return await aiohttp_client(init(make_config(tmp_path, **changes), clock, clock))

    return go


def service(client: Client) -> JobService:
    return client.app[SERVICE]


def store_of(client: Client) -> ShowcaseStore:
    """The single relay's gallery table."""
    showcase = service(client).showcase
    assert isinstance(showcase, Showcase)
    return showcase.store


async def run_job(client: Client, node: FakeNode, **fields: str) -> dict[str, Any]:
    """Submit a job, let the fake node finish it, wait for any share; return its view."""
    fields.setdefault("style", "painting:starry_night")
    fields.setdefault("size", "40")
    resp = await client.post("/api/jobs", data=form(**fields))
    assert resp.status == 202, await resp.text()
    job: dict[str, Any] = await resp.json()
    offer = await node.offer()
    assert offer.job_id == job["id"]
    assert (await node.finish(offer))[0]
    await service(client).showcase.settled()
    done: dict[str, Any] = await (await client.get(f"/api/jobs/{job['id']}")).json()
    return done


async def listing(client: Client, query: str = "") -> dict[str, Any]:
    resp = await client.get(f"/api/gallery{query}")
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-cache"
    body: dict[str, Any] = await resp.json()
    return body


async def test_nothing_is_shared_unless_asked(start: Start) -> None:
    client = await start()
    node = FakeNode.connect(service(client))
    job = await run_job(client, node)
    assert (job["state"], job["shared"], job["gallery_id"]) == ("done", False, None)
    assert (await listing(client))["items"] == []


async def test_shared_at_submit_is_listed_when_done_without_the_photo(start: Start) -> None:
    client = await start()
    node = FakeNode.connect(service(client))
    job = await run_job(client, node, share="true")
    assert job["shared"] is True and job["gallery_id"]
    body = await listing(client)
    [item] = body["items"]
    assert body["next_cursor"] is None
    assert item["id"] == job["gallery_id"] != job["id"]
    assert job["id"] not in str(body)
    assert item["method"] == "gatys"
    assert item["style"] == {"id": "painting:starry_night", "name": "The Starry Night"}
    assert item["style_image_url"] is None
    assert not any("content" in str(v) for v in item.values())
    thumb = await client.get(item["thumbnail_url"])
    assert thumb.status == 200 and thumb.content_type == "image/jpeg"
    assert thumb.headers["X-Content-Type-Options"] == "nosniff"
    assert thumb.headers["Cache-Control"] == "public, max-age=300, must-revalidate"
    with Image.open(io.BytesIO(await thumb.read())) as img:
        assert img.format == "JPEG" and max(img.size) <= THUMB_SIDE
    full = await client.get(item["image_url"])
    result = await client.get(f"/api/jobs/{job['id']}/result")
    assert full.content_type == "image/png"
    assert await full.read() == await result.read()
    assert (await client.get(f"/api/gallery/{item['id']}/style")).status == 404


async def test_uploaded_style_shown_only_with_share_style(start: Start) -> None:
    client = await start()
    node = FakeNode.connect(service(client))
    style = png((30, 30), (1, 2, 3))

    async def with_upload(**fields: str) -> dict[str, Any]:
        data = form(method="arbitrary", size="40", **fields)
        data.add_field("style_image", io.BytesIO(style), filename="s.png", content_type="image/png")
        resp = await client.post("/api/jobs", data=data)
        assert resp.status == 202, await resp.text()
        job: dict[str, Any] = await resp.json()
        assert (await node.finish(await node.offer()))[0]
        await service(client).showcase.settled()
        return job

    await with_upload(share="yes")
    await with_upload(share="yes", share_style="yes")
    newer, older = (await listing(client))["items"]
    assert older["style_image_url"] is None
    assert newer["style"]["id"] == "upload" and newer["style"]["name"] is None
    shown = await client.get(newer["style_image_url"])
    assert shown.status == 200 and shown.content_type == "image/png"
    with Image.open(io.BytesIO(await shown.read())) as img:
        assert img.getpixel((0, 0)) == (1, 2, 3)


async def test_share_later_and_unshare_any_time(start: Start) -> None:
    client = await start()
    node = FakeNode.connect(service(client))
    job = await run_job(client, node)
    url = f"/api/jobs/{job['id']}/share"
    shared = await (await client.post(url)).json()
    assert shared["shared"] is True
    [item] = (await listing(client))["items"]
    assert item["id"] == shared["gallery_id"]
    assert (await client.post(url)).status == 200  # twice is once
    assert len((await listing(client))["items"]) == 1
    withdrawn = await (await client.delete(url)).json()
    assert (withdrawn["shared"], withdrawn["gallery_id"]) == (False, None)
    assert (await listing(client))["items"] == []
    assert (await client.get(item["image_url"])).status == 404
    # The job itself is untouched.
    assert (await client.get(f"/api/jobs/{job['id']}/result")).status == 200


async def test_unshare_before_done_means_never_listed(start: Start) -> None:
    client = await start()
    node = FakeNode.connect(service(client))
    resp = await client.post("/api/jobs", data=form(style="painting:udnie", size="40", share="1"))
    job = await resp.json()
    assert job["shared"] is True and job["gallery_id"] is None
    await client.delete(f"/api/jobs/{job['id']}/share")
    assert (await node.finish(await node.offer()))[0]
    await service(client).showcase.settled()
    assert (await listing(client))["items"] == []


async def test_bad_share_values_are_400(start: Start) -> None:
    client = await start()
    resp = await client.post("/api/jobs", data=form(style="painting:udnie", share="maybe"))
    assert resp.status == 400
    assert "`share` must be true or false" in (await resp.json())["error"]


async def test_gallery_ids_open_no_job_and_job_ids_no_item(start: Start) -> None:
    client = await start()
    node = FakeNode.connect(service(client))
    job = await run_job(client, node, share="true")
    gid = job["gallery_id"]
    for path in ("", "/result", "/content", "/style/0", "/preview"):
        assert (await client.get(f"/api/jobs/{gid}{path}")).status == 404
    assert (await client.delete(f"/api/jobs/{gid}/share")).status == 404
    for kind in ("thumbnail", "image", "style"):
        assert (await client.get(f"/api/gallery/{job['id']}/{kind}")).status == 404
    assert (await client.post(f"/api/gallery/{job['id']}/report")).status == 404
    assert len((await listing(client))["items"]) == 1


async def test_reports_hide_an_item_once_per_client_and_are_rate_limited(start: Start) -> None:
    client = await start(gallery_report_threshold=3, gallery_reports_per_hour=2)
    node = FakeNode.connect(service(client))
    await run_job(client, node, share="true")
    keep = await run_job(client, node, share="true")
    item = (await listing(client))["items"][1]

    async def report(ip: str, item_id: str = item["id"]) -> int:
        headers = {"X-Forwarded-For": ip}
        return (await client.post(f"/api/gallery/{item_id}/report", headers=headers)).status

    assert await report("203.0.113.1") == 202
    assert await report("203.0.113.1") == 202  # the same client again: still one report
    assert await report("203.0.113.1") == 429  # and a third within the hour: refused
    assert await report("203.0.113.2") == 202
    assert len((await listing(client))["items"]) == 2
    assert await report("203.0.113.3") == 202
    [left] = (await listing(client))["items"]
    assert left["id"] == keep["gallery_id"]
    assert (await client.get(item["image_url"])).status == 404
    assert await report("203.0.113.4") == 404  # hidden items are not there to report
    status = await (await client.get("/status")).text()
    assert item["id"] in status and "reports" in status and "1 item(s) shown, 1 hidden" in status


async def test_operator_commands(start: Start, tmp_path: Path, capsys: Any) -> None:
    client = await start()
    node = FakeNode.connect(service(client))
    job = await run_job(client, node, share="true")
    gid = job["gallery_id"]
    data_dir = str(tmp_path / "data")
    assert cli_main(["gallery", "list", "--data-dir", data_dir]) == 0
    out = capsys.readouterr().out
    assert gid in out and "shown" in out and job["id"] not in out
    assert cli_main(["gallery", "hide", gid, "--data-dir", data_dir]) == 0
    assert (await listing(client))["items"] == []
    assert (await client.get(f"/api/gallery/{gid}/image")).status == 404
    assert cli_main(["gallery", "restore", gid, "--data-dir", data_dir]) == 0
    assert [i["id"] for i in (await listing(client))["items"]] == [gid]
    assert cli_main(["gallery", "hide", "no-such-item", "--data-dir", data_dir]) == 2
    assert "no gallery item" in capsys.readouterr().err
    svc = service(client)
    stored = store_of(client).get(gid)
    assert stored is not None
    assert cli_main(["gallery", "delete", gid, "--data-dir", data_dir]) == 0
    assert (await listing(client))["items"] == []
    # The relay lets go of the deleted item's files at its next sweep.
    assert svc.blobs.exists(stored.thumb_file)
    await svc.sweep()
    assert not svc.blobs.exists(stored.thumb_file)


async def test_shared_results_outlive_the_result_ttl_until_gallery_keep(
    start: Start, clock: FakeClock
) -> None:
    client = await start(result_ttl=DAY, gallery_keep=3 * DAY)
    svc = service(client)
    node = FakeNode.connect(svc)
    plain = await run_job(client, node, size="48")  # another size: another result file
    job = await run_job(client, node, share="true")
    record = svc.get(job["id"])
    assert record.result_file is not None
    result_path = svc.blobs.path(record.result_file)
    plain_path = svc.blobs.path(svc.get(plain["id"]).result_file or "")
    clock.advance(DAY + 1)
    assert await svc.sweep() == 2
    assert (await client.get(f"/api/jobs/{job['id']}")).status == 404
    assert not plain_path.exists()
    [item] = (await listing(client))["items"]
    assert result_path.exists()
    assert (await client.get(item["image_url"])).status == 200
    clock.advance(2 * DAY)
    await svc.sweep()
    assert (await listing(client))["items"] == []
    assert not result_path.exists()


async def test_gallery_max_lets_the_oldest_go(start: Start) -> None:
    client = await start(gallery_max=2)
    svc = service(client)
    node = FakeNode.connect(svc)
    first = await run_job(client, node, share="true")
    second = await run_job(client, node, share="true")
    third = await run_job(client, node, share="true")
    ids = [i["id"] for i in (await listing(client))["items"]]
    assert ids == [third["gallery_id"], second["gallery_id"]]
    assert first["gallery_id"] not in ids
    assert svc.get(first["id"]).state == "done"  # the job keeps its own result


async def test_pages_of_24_newest_first_with_filters(start: Start) -> None:
    client = await start()
    store = store_of(client)
    for n in range(30):
        method = "fast" if n % 3 == 0 else "gatys"
        style = "fast:candy" if method == "fast" else "painting:udnie"
        item = Item(f"item{n}", f"job{n}", method, style, "a" * 64, "b" * 64, None, 8, 8, n)
        store.add(item, 1000)
    first = await listing(client)
    assert [i["id"] for i in first["items"]] == [f"item{n}" for n in range(29, 29 - PAGE_SIZE, -1)]
    second = await listing(client, f"?cursor={first['next_cursor']}")
    assert [i["id"] for i in second["items"]] == [f"item{n}" for n in range(5, -1, -1)]
    assert second["next_cursor"] is None
    fast = await listing(client, "?method=fast")
    assert [i["id"] for i in fast["items"]] == [f"item{n}" for n in range(27, -1, -3)]
    udnie = await listing(client, "?style=painting:udnie&method=gatys")
    assert len(udnie["items"]) == 20
    assert (await client.get("/api/gallery?cursor=abc")).status == 400


async def test_delete_now_takes_a_shared_result_out_of_the_gallery_at_once(start: Start) -> None:
    client = await start()
    svc = service(client)
    node = FakeNode.connect(svc)
    job = await run_job(client, node)
    shared = await (await client.post(f"/api/jobs/{job['id']}/share")).json()
    [item] = (await listing(client))["items"]
    assert item["id"] == shared["gallery_id"]
    stored = store_of(client).get(item["id"])
    assert stored is not None
    files = stored.files()
    assert all(svc.blobs.exists(sha) for sha in files)
    assert (await client.delete(f"/api/jobs/{job['id']}")).status == 204
    assert (await listing(client))["items"] == []
    assert (await client.get(item["image_url"])).status == 404
    assert not any(svc.blobs.exists(sha) for sha in files)
