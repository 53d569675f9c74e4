"""The Python client and the `stylerelay` command against a real relay (served over TCP in
a thread) with a fake node painting in it."""

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from pytest_aiohttp import AiohttpServer
from relay_harness import png
from web_relay import RelayThread, web_config

from stylerelay import AsyncClient, BadRequest, Client, NotFound, TooManyRequests, Unauthorized

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayThread]:
    thread = RelayThread(web_config(tmp_path)).start()
    yield thread
    thread.stop()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        return img.size


# ---- asyncio -----------------------------------------------------------------------------


async def test_async_paint_end_to_end_events_then_result(
    relay: RelayThread, tmp_path: Path
) -> None:
    relay.add_node(epoch_seconds=0.01)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png((120, 80)))
    async with AsyncClient(relay.url) as client:
        job = await client.submit(photo, "painting:starry_night", method="gatys", epochs=5, size=60)
        assert job["state"] in ("queued", "running") and (job["width"], job["height"]) == (60, 40)
        events = [event async for event in client.events(job["id"])]
        kinds = [e["type"] for e in events]
        assert kinds[0] == "state" and kinds[-1] == "done"
        epochs = [e["epoch"] for e in events if e["type"] == "progress"]
        assert epochs and epochs == sorted(epochs) and epochs[-1] == 5
        assert kinds.index("progress") < kinds.index("done")
        out = await client.download(job["id"], tmp_path / "out.png")
        assert size_of(out.read_bytes()) == (60, 40)
        # The job has ended: delete takes it and its images away.
        await client.delete(job["id"])
        with pytest.raises(NotFound):
            await client.job(job["id"])


async def test_async_events_by_polling_and_a_pil_image(relay: RelayThread) -> None:
    relay.add_node(epoch_seconds=0.01)
    async with AsyncClient(relay.url, poll_interval=0.02) as client:
        photo = Image.new("RGB", (50, 30), (9, 99, 199))
        job = await client.submit(photo, "fast:candy", method="fast")
        events = [e async for e in client.events(job["id"], websocket=False)]
        assert events[-1]["type"] == "done"
        assert size_of(await client.result(job["id"])) == (50, 30)


async def test_events_fall_back_to_polling_when_the_socket_fails(
    relay: RelayThread, aiohttp_server: AiohttpServer
) -> None:
    """A proxy in front of the relay that passes requests on but refuses WebSockets (as
    some proxies do): the client's events still arrive, by polling, and end with done."""
    relay.add_node(epoch_seconds=0.02)
    sockets_refused = 0

    async def forward(request: web.Request) -> web.Response:
        nonlocal sockets_refused
        if request.path.endswith("/events"):
            sockets_refused += 1
            return web.Response(status=502, text="no websockets here")
        async with aiohttp.ClientSession() as session:
            body = await request.read()
            async with session.request(
                request.method, relay.url + request.path_qs, data=body, headers=request.headers
            ) as resp:
                return web.Response(
                    status=resp.status, body=await resp.read(), content_type=resp.content_type
                )

    proxy = web.Application()
    proxy.router.add_route("*", "/{tail:.*}", forward)
    server = await aiohttp_server(proxy)
    async with AsyncClient(str(server.make_url("/")), poll_interval=0.01) as client:
        job = await client.submit(png(), "painting:starry_night", epochs=20)
        events = [e async for e in client.events(job["id"])]
    assert sockets_refused == 1
    assert events[-1]["type"] == "done" and events[-1]["job"]["result_url"]
    assert any(e["type"] == "progress" for e in events)


async def test_async_cancel_and_delete_an_open_job(relay: RelayThread) -> None:
    async with AsyncClient(relay.url) as client:  # no node: the jobs wait
        job = await client.submit(png(), "painting:starry_night", epochs=10)
        cancelled = await client.cancel(job["id"])
        assert cancelled["state"] == "cancelled"
        other = await client.submit(png(), "painting:starry_night", epochs=10)
        await client.delete(other["id"])
        with pytest.raises(NotFound):
            await client.job(other["id"])


async def test_refusals_carry_the_relays_message_and_status(relay: RelayThread) -> None:
    async with AsyncClient(relay.url) as client:
        with pytest.raises(BadRequest) as bad:
            await client.submit(png(), "painting:no_such_style")
        assert bad.value.status == 400 and "no_such_style" in bad.value.message
        with pytest.raises(NotFound):
            await client.result("nope")
    async with AsyncClient(relay.url, key="not-a-key") as client:
        with pytest.raises(Unauthorized) as unauthorized:
            await client.styles()
        assert unauthorized.value.status == 401


async def test_429_exposes_retry_after(tmp_path: Path) -> None:
    relay = RelayThread(web_config(tmp_path, rate_per_minute=1)).start()
    try:
        async with AsyncClient(relay.url) as client:
            await client.submit(png(), "painting:starry_night")
            with pytest.raises(TooManyRequests) as limited:
                await client.submit(png(), "painting:starry_night")
        assert limited.value.retry_after is not None and limited.value.retry_after >= 1
    finally:
        relay.stop()


# ---- sync --------------------------------------------------------------------------------


def test_sync_client_paints_styles_and_iterates_events(relay: RelayThread, tmp_path: Path) -> None:
    relay.add_node(epoch_seconds=0.01)
    with Client(relay.url) as client:
        ids = [s["id"] for s in client.styles()["styles"]]
        assert "painting:starry_night" in ids and "fast:candy" in ids
        seen: list[str] = []
        options = {"method": "gatys", "epochs": 3, "out": tmp_path / "o.png"}
        on_event = lambda e: seen.append(e["type"])  # noqa: E731
        data = client.paint(png((64, 48)), "painting:starry_night", on_event=on_event, **options)
        assert size_of(data) == (64, 48) and (tmp_path / "o.png").read_bytes() == data
        assert "progress" in seen and seen[-1] == "done"
        job = client.submit(png(), "fast:candy", method="fast")
        assert [e["type"] for e in client.events(job["id"])][-1] == "done"


# ---- the command -------------------------------------------------------------------------


def command(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "stylerelay", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_command_paint_and_styles(relay: RelayThread, tmp_path: Path) -> None:
    relay.add_node(epoch_seconds=0.01)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png((100, 50)))
    out = tmp_path / "painted.png"
    style = ["--style", "painting:starry_night", "--method", "gatys", "--epochs", "4"]
    run = command("paint", str(photo), *style, "--size", "40", "--relay", relay.url, "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert size_of(out.read_bytes()) == (40, 20)
    assert "4/4 epochs" in run.stderr and "done" in run.stderr

    listed = command("styles", "--relay", relay.url)
    assert listed.returncode == 0, listed.stderr
    assert "painting:starry_night\tpainting\t" in listed.stdout
    assert "method gatys\tavailable" in listed.stdout

    refused = command("paint", str(photo), "--style", "nope", "--relay", relay.url, "-o", str(out))
    assert refused.returncode == 2 and "nope" in refused.stderr
    assert "Traceback" not in refused.stderr
