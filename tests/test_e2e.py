"""End to end: a real relay and a real node daemon (CPU, tiny images), over HTTP, WebSocket
and the node protocol, as a person and a GPU owner would use them."""

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from PIL import Image
from pytest_aiohttp import AiohttpClient
from relay_harness import make_config

from gpu_node.daemon.config import NodeConfig
from gpu_node.daemon.daemon import Daemon, create_daemon
from relay.app import NODE_LISTENER, init
from relay.tokens import TokenStore

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
Client = TestClient[web.Request, web.Application]
Json = dict[str, Any]


def photo(name: str = "chelsea.png", long_side: int = 96) -> bytes:
    """A test photo as PNG, scaled down."""
    path = next(DATA.rglob(name))
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    rgb.thumbnail((long_side, long_side))
    out = io.BytesIO()
    rgb.save(out, format="PNG")
    return out.getvalue()


def job_form(**fields: str) -> FormData:
    data = FormData()
    data.add_field("content", photo(), filename="cat.png", content_type="image/png")
    for name, value in fields.items():
        if name == "style_image":
            data.add_field(name, photo("coffee.png"), filename="s.png", content_type="image/png")
        else:
            data.add_field(name, value)
    return data


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        img.load()
        return img.size


def node_config(port: int, token: str, **changes: Any) -> NodeConfig:
    values: dict[str, Any] = {
        "relay_host": "127.0.0.1",
        "relay_port": port,
        "token": token,
        "name": "e2e-node",
        "device": "cpu",
        "max_epochs": 400,
        "backoff_min": 0.2,
        "backoff_max": 1.0,
        "drain_grace": 5.0,
    }
    values.update(changes)
    return NodeConfig(**values)


async def watch(client: Client, job_id: str, until: set[str]) -> list[Json]:
    """Every event of a job's WebSocket until one of `until` arrives."""
    events: list[Json] = []
    async with client.ws_connect(f"/api/jobs/{job_id}/events") as ws:
        async with asyncio.timeout(120):
            async for msg in ws:
                event: Json = msg.json()
                events.append(event)
                if event["type"] in until:
                    break
    return events


class Service:
    """A relay on a test client with a real daemon dialled in."""

    def __init__(self, client: Client, daemon: Daemon, task: asyncio.Task[int]) -> None:
        self.client = client
        self.daemon = daemon
        self.task = task

    async def submit(self, **fields: str) -> str:
        resp = await self.client.post("/api/jobs", data=job_form(**fields))
        body: Json = await resp.json()
        assert resp.status == 202, body
        job_id: str = body["id"]
        return job_id

    async def result(self, job_id: str) -> bytes:
        body: Json = await (await self.client.get(f"/api/jobs/{job_id}")).json()
        assert body["state"] == "done", body
        resp = await self.client.get(body["result_url"])
        assert resp.status == 200
        return await resp.read()


@pytest.fixture
async def service(aiohttp_client: AiohttpClient, tmp_path: Path) -> AsyncIterator[Service]:
    config = make_config(tmp_path, max_size=512)
    client = await aiohttp_client(init(config))
    token = TokenStore(config.data_dir).add("e2e-node")
    daemon = create_daemon(node_config(client.app[NODE_LISTENER].port, token))
    task = asyncio.create_task(daemon.serve())
    async with asyncio.timeout(60):
        while not (await (await client.get("/api/nodes")).json())["nodes"]:
            await asyncio.sleep(0.1)
    yield Service(client, daemon, task)
    daemon.drain()
    assert await asyncio.wait_for(task, 30) == 0


async def test_fast_arbitrary_and_gatys_jobs_run_end_to_end(service: Service) -> None:
    client = service.client
    styles: Json = await (await client.get("/api/styles")).json()
    fast_ids = [s["id"] for s in styles["styles"] if s["id"].startswith("fast:")]
    assert len(fast_ids) >= 26

    fast = await service.submit(style=fast_ids[0], size="64")
    events = await watch(client, fast, {"done", "failed"})
    assert events[-1]["type"] == "done", events
    assert max(png_size(await service.result(fast))) == 64

    arbitrary = await service.submit(method="arbitrary", style_image="x", size="64")
    events = await watch(client, arbitrary, {"done", "failed"})
    assert events[-1]["type"] == "done", events
    assert max(png_size(await service.result(arbitrary))) == 64

    gatys = await service.submit(style="painting:starry_night", epochs="6", size="48")
    events = await watch(client, gatys, {"done", "failed"})
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "done", events
    epochs = [e["epoch"] for e in events if e["type"] == "progress"]
    assert epochs == sorted(epochs) and epochs[-1] == 6
    assert "preview" in kinds
    progress = next(e for e in events if e["type"] == "progress")
    assert {"content", "style"} <= set(progress["losses"])
    assert max(png_size(await service.result(gatys))) == 48
    nodes: Json = await (await client.get("/api/nodes")).json()
    assert nodes["nodes"][0]["jobs_done"] == 3


async def test_cancel_stops_the_node_and_it_serves_the_next_job(service: Service) -> None:
    client = service.client
    slow = await service.submit(style="painting:udnie", epochs="400", size="48")
    async with client.ws_connect(f"/api/jobs/{slow}/events") as ws:
        async with asyncio.timeout(60):
            async for msg in ws:
                if msg.json()["type"] == "progress":
                    break
        assert (await client.delete(f"/api/jobs/{slow}")).status in (200, 202)
        async with asyncio.timeout(30):
            async for msg in ws:
                if msg.json()["type"] == "cancelled":
                    break
    fast = await service.submit(style="fast:builtin:starry-blue", size="48")
    events = await watch(client, fast, {"done", "failed"})
    assert events[-1]["type"] == "done", events
    state: Json = await (await client.get(f"/api/jobs/{slow}")).json()
    assert state["state"] == "cancelled"


async def test_epochs_above_the_node_cap_wait_with_a_reason(service: Service) -> None:
    # The relay allows 500 epochs; this node's owner allows 400.
    job = await service.submit(style="painting:udnie", epochs="450", size="48")
    async with asyncio.timeout(30):
        while True:
            state: Json = await (await service.client.get(f"/api/jobs/{job}")).json()
            if state["waiting_reason"]:
                break
            await asyncio.sleep(0.1)
    assert state["state"] == "queued"
    assert "400" in state["waiting_reason"]


# ---- the relay as a process, stopped and started again --------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


RelayProcess = Callable[[], Awaitable[subprocess.Popen[bytes]]]


@pytest.fixture
async def relay_process(tmp_path: Path) -> AsyncIterator[tuple[RelayProcess, int, int, Path]]:
    http_port, node_port, data = free_port(), free_port(), tmp_path / "data"
    procs: list[subprocess.Popen[bytes]] = []

    async def start() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "relay", "--host", "127.0.0.1"]
        cmd += ["--http-port", str(http_port), "--node-port", str(node_port)]
        cmd += ["--data-dir", str(data), "--heartbeat-interval", "1"]
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, env={**os.environ})
        procs.append(proc)
        async with aiohttp.ClientSession() as http, asyncio.timeout(60):
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{http_port}/healthz") as resp:
                        if resp.status == 200:
                            return proc
                except aiohttp.ClientError:
                    await asyncio.sleep(0.2)

    yield start, http_port, node_port, data
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_relay_restart_recovers_a_running_job(
    relay_process: tuple[RelayProcess, int, int, Path],
) -> None:
    start, http_port, node_port, data = relay_process
    base = f"http://127.0.0.1:{http_port}"
    relay = await start()
    token = TokenStore(data).add("e2e-node")
    daemon = create_daemon(node_config(node_port, token))
    task = asyncio.create_task(daemon.serve())
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/api/jobs", data=job_form(style="painting:udnie", epochs="40", size="48")
            ) as resp:
                assert resp.status == 202, await resp.text()
                job_id = (await resp.json())["id"]
            async with asyncio.timeout(90):
                while (await (await http.get(f"{base}/api/jobs/{job_id}")).json())["epoch"] is None:
                    await asyncio.sleep(0.2)
            relay.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(relay.wait, 30) == 0
            await start()
            async with asyncio.timeout(180):
                while True:
                    state = await (await http.get(f"{base}/api/jobs/{job_id}")).json()
                    if state["state"] in ("done", "failed"):
                        break
                    await asyncio.sleep(0.3)
            assert state["state"] == "done", state
            assert state["attempts"] == 0  # the relay's restart is not the job's fault
            async with http.get(f"{base}{state['result_url']}") as resp:
                assert max(png_size(await resp.read())) == 48
    finally:
        daemon.drain()
        await asyncio.wait_for(task, 30)
