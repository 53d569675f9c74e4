"""`/metrics`, `/status` and structured log lines, against the real app and a fake node."""

import base64
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, make_config, png

from relay import logs
from relay.api import SERVICE
from relay.app import init

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


def samples(text: str) -> dict[str, float]:
    """Every sample line of an exposition as {'name{labels}': value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


async def scrape(client: Client) -> dict[str, float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(await resp.text())


async def test_metrics_follow_a_job_through_queue_node_and_result(
    start: Start, clock: FakeClock
) -> None:
    client = await start()
    before = await scrape(client)
    assert before["stylerelay_nodes_connected"] == 0
    assert before['stylerelay_jobs{state="queued"}'] == 0

    resp = await client.post("/api/jobs", data=form(style="painting:starry_night", epochs="5"))
    assert resp.status == 202
    queued = await scrape(client)
    assert queued["stylerelay_queue_length"] == 1
    assert queued['stylerelay_jobs{state="queued"}'] == 1

    clock.advance(7.0)  # waits 7 s for a node
    node = FakeNode.connect(client.app[SERVICE])
    offer = await node.offer()
    running = await scrape(client)
    assert running["stylerelay_nodes_connected"] == 1
    assert running['stylerelay_jobs{state="running"}'] == 1
    assert running['stylerelay_job_wait_seconds_bucket{method="gatys",le="5"}'] == 0
    assert running['stylerelay_job_wait_seconds_bucket{method="gatys",le="10"}'] == 1
    assert running['stylerelay_job_wait_seconds_sum{method="gatys"}'] == 7

    clock.advance(42.0)  # runs 42 s
    ok, _ = await node.finish(offer)
    assert ok
    done = await scrape(client)
    assert done['stylerelay_jobs_finished_total{method="gatys",state="done"}'] == 1
    assert done['stylerelay_job_duration_seconds_bucket{method="gatys",le="30"}'] == 0
    assert done['stylerelay_job_duration_seconds_bucket{method="gatys",le="60"}'] == 1
    assert done['stylerelay_job_duration_seconds_bucket{method="gatys",le="+Inf"}'] == 1
    assert done['stylerelay_job_duration_seconds_count{method="gatys"}'] == 1
    assert done["stylerelay_queue_length"] == 0


async def test_rejected_uploads_are_counted_by_reason(start: Start) -> None:
    client = await start(max_open_jobs=1)
    bad = await client.post("/api/jobs", data=form(b"not an image", style="painting:starry_night"))
    assert bad.status == 400
    big = await client.post(
        "/api/jobs", data=form(b"\x89PNG" + bytes(2 << 20), style="painting:starry_night")
    )
    assert big.status == 413
    assert (await client.post("/api/jobs", data=form(style="painting:starry_night"))).status == 202
    full = await client.post("/api/jobs", data=form(style="painting:starry_night"))
    assert full.status == 429
    metrics = await scrape(client)
    assert metrics['stylerelay_uploads_rejected_total{reason="bad_request"}'] == 1
    assert metrics['stylerelay_uploads_rejected_total{reason="too_large"}'] == 1
    assert metrics['stylerelay_uploads_rejected_total{reason="rate_limited"}'] == 1


async def test_status_page_shows_nodes_and_queue_but_no_secrets(
    start: Start, clock: FakeClock
) -> None:
    client = await start()
    first = await client.post(
        "/api/jobs", data=form(style="painting:starry_night", email="ann@example.org")
    )
    job_id = (await first.json())["id"]
    clock.advance(150)
    node = FakeNode.connect(client.app[SERVICE], name="gpu-<b>1")
    await node.offer()
    await client.post("/api/jobs", data=form(style="painting:starry_night"))
    clock.advance(300)

    resp = await client.get("/status")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert "gpu-&lt;b&gt;1" in page  # names are escaped
    assert "Fake GPU" in page and "busy" in page
    assert job_id[:6] in page and job_id not in page
    assert "ann@example.org" not in page
    assert re.search(r"Queue length</th><td[^>]*>1<", page)
    assert re.search(r"Oldest waiting job</th><td[^>]*>5 min<", page)
    assert "<script" not in page and "://" not in page  # no external assets
    # Its one inline style is allowed by hash, so the relay's page policy does not strip it.
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in resp.headers["Content-Security-Policy"]


def test_kv_and_json_lines_carry_event_job_and_node() -> None:
    record = logging.LogRecord(
        "relay.jobs", logging.INFO, __file__, 1, "job %s done", ("j1",), None
    )
    record.stylerelay_event = "job_done"
    record.stylerelay_fields = {"job": "j1", "node": "gpu-1", "ms": 1234}
    line = logs.KeyValueFormatter().format(record)
    assert "\n" not in line
    assert " level=info logger=relay.jobs event=job_done job=j1 node=gpu-1 ms=1234 " in line
    assert line.endswith('msg="job j1 done"')
    data = json.loads(logs.JsonFormatter().format(record))
    assert data["event"] == "job_done" and data["node"] == "gpu-1" and data["ms"] == 1234

    plain = logging.LogRecord("x", logging.WARNING, __file__, 1, 'a "b"\nc', (), None)
    line = logs.KeyValueFormatter().format(plain)
    assert "\n" not in line and 'event=log msg="a \\"b\\"\\nc"' in line


async def test_job_events_are_logged_with_job_and_node(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start()
    caplog.set_level(logging.INFO, logger="relay")
    resp = await client.post("/api/jobs", data=form(png(), style="painting:starry_night"))
    job_id = (await resp.json())["id"]
    node = FakeNode.connect(client.app[SERVICE])
    await node.finish(await node.offer())
    events = {
        getattr(r, logs.EVENT): getattr(r, logs.FIELDS)
        for r in caplog.records
        if hasattr(r, logs.EVENT)
    }
    assert events["job_queued"]["job"] == job_id
    assert events["job_started"] == {"job": job_id, "node": "gpu-1", "wait_ms": 0}
    assert events["job_done"]["job"] == job_id and events["job_done"]["node"] == "gpu-1"
    line = logs.KeyValueFormatter().format(
        next(r for r in caplog.records if getattr(r, logs.EVENT, "") == "job_done")
    )
    assert f"event=job_done job={job_id} node=gpu-1 method=gatys ms=0" in line
