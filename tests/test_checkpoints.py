"""No painting thrown away (issue 12): a Gatys job's checkpoints, the painting so far of a
cancelled or failed job, and a requeued job that continues where its last node stopped.

From the engine up: the engine resumes from a picture; the node's reporter throttles
checkpoints; a real relay with fake nodes over TCP keeps, replaces, shows and resends them
(and refuses them on a version-1 connection); and end to end, a real relay with real CPU
daemons, one of them killed with SIGKILL mid-job.
"""

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from daemon_helpers import decode, fake_relay, picture, png
from fast_helpers import one_thread
from PIL import Image
from relay_harness import png as plain_png
from wire_node import capabilities
from wire_relay import Relay, Start, accept, result_for

from gpu_node.daemon.capabilities import build_capabilities
from gpu_node.daemon.config import ConfigError, NodeConfig, add_arguments, from_args
from gpu_node.daemon.daemon import Daemon
from gpu_node.daemon.params import NodeCaps
from gpu_node.daemon.reporting import Reporter
from gpu_node.daemon.runner import JobRunner
from gpu_node.engine.gatys import stylize_gatys
from gpu_node.engine.gatys_params import GatysParams
from gpu_node.engine.progress import EngineProgress
from gpu_node.errors import BadInputError
from gpu_node.fast.registry import build_registry
from protocol import (
    Accept,
    Bye,
    ByeReason,
    Cancel,
    Checkpoint,
    Connection,
    Decline,
    DeclineReason,
    Drain,
    Failure,
    FailureCode,
    Hello,
    Message,
    Offer,
    Preview,
    Progress,
    Role,
    StyleImage,
    Welcome,
)
from relay.api import SERVICE
from relay.jobs import JobService

Json = dict[str, Any]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


# ---- the engine ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> tuple[Image.Image, Image.Image]:
    return picture("chelsea.png", 32), picture("starry_night.jpg", 32)


def test_the_engine_continues_from_a_checkpoint_and_counts_on(
    images: tuple[Image.Image, Image.Image],
) -> None:
    content, style = images
    params = GatysParams(size=32, epochs=16, max_epochs=16)
    kept: dict[int, Image.Image] = {}
    fresh: list[EngineProgress] = []

    def checkpoint(epoch: int, render: Any) -> None:
        if epoch == 8:
            kept[epoch] = render()

    whole = stylize_gatys(
        content, [(style, 1.0)], params, progress=fresh.append, checkpoint=checkpoint
    )
    assert kept[8].size == whole.size
    resumed: list[EngineProgress] = []
    out = stylize_gatys(
        content, [(style, 1.0)], params, progress=resumed.append, start=kept[8], start_epoch=8
    )
    assert [p.epoch for p in resumed] == list(range(9, 17))
    assert {p.epochs for p in resumed} == {16}
    assert out.size == whole.size
    # The picture went on from where it was (only the optimiser's history restarted): its
    # first loss is about where the first run's epoch 9 was, far below that run's start.
    first, at_nine = resumed[0].losses["total"], fresh[8].losses["total"]
    assert first < fresh[0].losses["total"] / 2
    assert first < 1.2 * at_nine


def test_checkpoints_are_full_size_and_resume_across_scales(
    images: tuple[Image.Image, Image.Image],
) -> None:
    content, style = images
    # Two scales: 3 epochs at 64 px, then 3 at 128 px.
    params = GatysParams(size=128, epochs=6, max_epochs=6, multiscale_above=64)
    assert params.scales() == [64, 128]
    sizes: dict[int, tuple[int, int]] = {}
    coarse: dict[int, Image.Image] = {}

    def checkpoint(epoch: int, render: Any) -> None:
        image = render()
        sizes[epoch] = image.size
        coarse.setdefault(epoch, image)

    whole = stylize_gatys(content, [(style, 1.0)], params, checkpoint=checkpoint)
    assert sizes == dict.fromkeys(range(1, 7), whole.size)  # the coarse scale too
    for start_epoch, expected in [(2, [3, 4, 5, 6]), (3, [4, 5, 6]), (6, [])]:
        log: list[EngineProgress] = []
        out = stylize_gatys(
            content, [(style, 1.0)], params, progress=log.append,
            start=coarse[start_epoch], start_epoch=start_epoch,
        )  # fmt: skip
        assert [p.epoch for p in log] == expected
        assert out.size == whole.size
    with pytest.raises(BadInputError, match="epoch 7 is not within the job's 6"):
        stylize_gatys(content, [(style, 1.0)], params, start=whole, start_epoch=7)


# ---- the node's reporter ---------------------------------------------------------------


def test_the_reporter_sends_a_checkpoint_when_due_and_the_newest_when_asked() -> None:
    now = [0.0]
    sent: list[Message] = []
    renders: list[int] = []
    offer = Offer("job-1", "lease-1", "gatys", {}, None, (), b"")
    reporter = Reporter(offer, sent.append, clock=lambda: now[0], checkpoint_every=10.0)

    def render_of(epoch: int) -> Any:
        def render() -> Image.Image:
            renders.append(epoch)
            return Image.new("RGB", (20, 10), (epoch, 0, 0))

        return render

    for epoch in range(1, 25):
        now[0] = float(epoch)  # a second an epoch
        reporter.checkpoint(epoch, render_of(epoch))
    assert renders == [10, 20]  # drawn only when due
    reporter.last_checkpoint()  # cancelled at epoch 24: the newest goes out too
    reporter.last_checkpoint()  # and only once
    checkpoints = [m for m in sent if isinstance(m, Checkpoint)]
    assert [c.epoch for c in checkpoints] == [10, 20, 24]
    assert (checkpoints[-1].width, checkpoints[-1].height) == (20, 10)
    assert decode(checkpoints[-1].png).getpixel((0, 0)) == (24, 0, 0)
    quiet = Reporter(offer, sent.append, clock=lambda: now[0])  # no checkpoint_every
    quiet.checkpoint(1, render_of(1))
    quiet.last_checkpoint()
    assert len(sent) == 3


def test_the_checkpoint_interval_is_a_node_setting() -> None:
    def config(argv: list[str], env: dict[str, str] | None = None) -> NodeConfig:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        base = ["--relay", "relay.example:5678", "--token", "t"]
        return from_args(parser.parse_args(base + argv), env or {})

    assert config([]).checkpoint_every == 30.0
    assert config(["--checkpoint-every", "0.5"]).checkpoint_every == 0.5
    assert config([], {"STYLERELAY_NODE_CHECKPOINT_EVERY": "90"}).checkpoint_every == 90.0
    for bad in ("0", "-1", "inf"):
        with pytest.raises(ConfigError, match="--checkpoint-every must be a positive number"):
            config(["--checkpoint-every", bad])


# ---- the daemon hands a job back with its picture --------------------------------------

NODE = NodeConfig(
    relay_host="127.0.0.1",
    relay_port=1,
    token="node-token",
    name="ckpt-node",
    device="cpu",
    max_epochs=400,
    max_pixels=200_000,
    backoff_min=0.05,
    backoff_max=0.2,
    drain_grace=0.2,
    checkpoint_every=1000.0,  # none on the way: only the one it hands back with
)


def daemon_for(port: int, token: str = "node-token", **changes: Any) -> Daemon:
    """A real node daemon on the CPU (no pace measurement, to start in a moment)."""
    config = replace(NODE, relay_port=port, token=token, **changes)
    runner = JobRunner(
        NodeCaps(config.max_epochs, config.max_pixels), build_registry(None), torch.device("cpu")
    )
    caps = build_capabilities(config, runner.registry, runner.device, runner.methods)
    return Daemon(config, caps, runner, rng=random.Random(0))


def welcome_v2(hello: Hello, conn: Connection) -> Message:
    return Welcome(2, "session-2", 5.0, conn.advertised_limits(1000, 50_000_000))


async def test_a_job_handed_back_leaves_its_picture_before_bye() -> None:
    async with fake_relay(welcome_v2) as relay:
        daemon = daemon_for(relay.port)
        task = asyncio.create_task(daemon.serve())
        side = await relay.next_session()
        job = Offer(
            "job-1", "lease-1", "gatys", {"epochs": 300, "size": 48}, None,
            (StyleImage(png("starry_night.jpg"), 1.0),), png(),
        )  # fmt: skip
        side.send(job)
        await side.expect(Progress)
        daemon.drain()  # the grace is short: the job is handed back
        rest = await side.until_closed()
        assert await asyncio.wait_for(task, 30) == 0
    kinds = [type(m) for m in rest if not isinstance(m, Progress | Preview)]
    assert kinds == [Drain, Checkpoint, Bye]
    checkpoint, bye = rest[-2], rest[-1]
    assert isinstance(checkpoint, Checkpoint) and isinstance(bye, Bye)
    assert bye.reason is ByeReason.SHUTDOWN and "1 job(s) handed back" in bye.message
    assert 0 < checkpoint.epoch < 300
    size = decode(checkpoint.png).size
    assert size == (checkpoint.width, checkpoint.height) and max(size) == 48


# ---- the relay, with fake nodes over TCP -----------------------------------------------


def service_of(relay: Relay) -> JobService:
    return relay.client.app[SERVICE]


async def gatys_job(relay: Relay, epochs: int = 20) -> str:
    return await relay.job(method="gatys", style="painting:udnie", epochs=str(epochs))


def checkpoint_for(offer: Offer, epoch: int, color: tuple[int, int, int]) -> Checkpoint:
    result = result_for(offer, color)
    return Checkpoint(offer.job_id, offer.lease_id, epoch, result.png, result.width, result.height)


async def kept_epoch(relay: Relay, job_id: str, epoch: int) -> str:
    """Wait until the relay keeps the job's checkpoint of `epoch`; its file's digest."""
    async with asyncio.timeout(5):
        while (job := service_of(relay).get(job_id)).partial_epoch != epoch:
            await asyncio.sleep(0.02)
    assert job.partial_file is not None
    return job.partial_file


async def test_a_requeued_job_resumes_from_its_latest_checkpoint_on_v2_nodes_only(
    start: Start,
) -> None:
    relay = await start()
    first = await relay.node("gpu-1")
    job_id = await gatys_job(relay)
    offer = await accept(first)
    assert not offer.resumes  # a job's first run starts afresh
    await first.send(checkpoint_for(offer, 5, (10, 10, 10)))
    older = await kept_epoch(relay, job_id, 5)
    latest = checkpoint_for(offer, 9, (90, 90, 90))
    await first.send(latest)
    newer = await kept_epoch(relay, job_id, 9)
    blobs = service_of(relay).blobs
    async with asyncio.timeout(5):  # the one it replaced is deleted at once
        while blobs.exists(older):
            await asyncio.sleep(0.02)
    assert blobs.exists(newer)

    old = await relay.node("old-gpu", versions=(1,))
    await first.close()  # lost mid-job: the job goes back to the queue
    again = await old.expect(Offer)
    assert again.job_id == job_id and not again.resumes and again.start_epoch == 0
    await old.send(Decline(job_id, again.lease_id, DeclineReason.UNSUPPORTED_METHOD, "no"))

    new = await relay.node("gpu-2")
    resumed = await accept(new)
    assert resumed.job_id == job_id
    assert resumed.start_image == latest.png and resumed.start_epoch == 9
    await new.send(result_for(resumed))
    done = await relay.wait_for(job_id, "done")
    assert done["partial"] is None  # the result supersedes it


@pytest.mark.parametrize("ending", ["cancel", "failure"])
async def test_a_job_that_ends_without_a_result_shows_its_painting_so_far(
    start: Start, ending: str
) -> None:
    relay = await start()
    node = await relay.node()
    job_id = await gatys_job(relay)
    offer = await accept(node)
    await node.send(checkpoint_for(offer, 7, (70, 70, 70)))
    await kept_epoch(relay, job_id, 7)
    running = await relay.state(job_id)
    assert running["partial"] is None  # shown once the job ends without a result
    if ending == "cancel":
        assert (await relay.client.delete(f"/api/jobs/{job_id}")).status == 200
        await node.expect(Cancel)
        # What the node reached as it stopped is kept, though its lease already ended.
        await node.send(checkpoint_for(offer, 8, (80, 80, 80)))
        await node.send(Failure(job_id, offer.lease_id, FailureCode.CANCELLED))
        await kept_epoch(relay, job_id, 8)
    else:
        await node.send(Failure(job_id, offer.lease_id, FailureCode.INVALID_INPUT, "bad"))
    state = await relay.wait_for(job_id, "cancelled" if ending == "cancel" else "failed")
    epoch = 8 if ending == "cancel" else 7
    assert state["partial"] == {"epoch": epoch, "url": f"/api/jobs/{job_id}/partial"}
    resp = await relay.client.get(state["partial"]["url"])
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert "attachment" in resp.headers["Content-Disposition"]
    image = decode(await resp.read())
    assert image.size == (state["width"], state["height"])
    assert image.convert("RGB").getpixel((0, 0)) == (epoch * 10,) * 3
    # It is the client's, counted in its quota, and goes when the job is deleted.
    job = service_of(relay).get(job_id)
    usage = service_of(relay).disk.usage
    assert usage.client_bytes(job.client) == service_of(relay).blobs.size(job.partial_file or "")
    assert (await relay.client.delete(f"/api/jobs/{job_id}")).status == 204
    assert not service_of(relay).blobs.exists(job.partial_file or "")


async def test_unusable_or_unwelcome_checkpoints_are_not_kept(start: Start) -> None:
    relay = await start()
    node = await relay.node()
    job_id = await gatys_job(relay)
    offer = await accept(node)
    good = checkpoint_for(offer, 3, (30, 30, 30))
    await node.send(good)
    await kept_epoch(relay, job_id, 3)
    wrong_size = Checkpoint(job_id, offer.lease_id, 4, plain_png((8, 8)), good.width, good.height)
    not_png = Checkpoint(job_id, offer.lease_id, 5, b"\x89PNG no", good.width, good.height)
    too_far = Checkpoint(job_id, offer.lease_id, 21, good.png, good.width, good.height)
    for bad in (wrong_size, not_png, too_far):
        await node.send(bad)
    await asyncio.sleep(1.0)  # past the second in which these used the lease's allowance
    await node.send(checkpoint_for(offer, 6, (60, 60, 60)))
    await kept_epoch(relay, job_id, 6)  # the bad ones in between changed nothing
    # A fast job keeps none.
    await node.send(result_for(offer))
    fast_id = await relay.job()
    fast = await accept(node)
    await node.send(checkpoint_for(fast, 1, (1, 1, 1)))
    await node.send(result_for(fast))
    assert (await relay.wait_for(fast_id, "done"))["partial"] is None
    assert service_of(relay).get(fast_id).partial_file is None


async def test_a_version_1_connection_sending_a_checkpoint_breaks_the_protocol(
    start: Start,
) -> None:
    relay = await start()
    old = await relay.node("old-gpu", versions=(1,))
    job_id = await gatys_job(relay)
    offer = await accept(old)
    # The frames a version-2 node would send for it (chunks, then the message).
    relay_end, node_end = Connection(Role.RELAY), Connection(Role.NODE)
    relay_end.receive_data(node_end.send(Hello((2,), "n", "", "", capabilities())))
    node_end.receive_data(relay_end.send(Welcome(2, "s", 5.0, relay_end.advertised_limits(9, 9))))
    node_end.receive_data(relay_end.send(offer))
    node_end.send(Accept(job_id, offer.lease_id))
    await old.send_raw(node_end.send(checkpoint_for(offer, 2, (2, 2, 2))))
    bye = await old.expect(Bye)
    assert bye.reason is ByeReason.PROTOCOL_ERROR
    assert await old.closed_by_relay()
    requeued = await relay.wait_for(job_id, "queued")
    assert requeued["attempts"] == 1
    assert service_of(relay).get(job_id).partial_file is None


# ---- end to end: a real relay and real CPU daemons -------------------------------------


async def events_until(relay: Relay, job_id: str, until: set[str], out: list[Json]) -> None:
    """Append every event of the job's WebSocket to `out` until one of `until`."""
    async with relay.client.ws_connect(f"/api/jobs/{job_id}/events") as ws:
        async for msg in ws:
            event: Json = msg.json()
            out.append(event)
            if event["type"] in until:
                return


@pytest.fixture
async def daemons() -> AsyncIterator[list[tuple[Daemon, asyncio.Task[int]]]]:
    running: list[tuple[Daemon, asyncio.Task[int]]] = []
    yield running
    for daemon, task in running:
        if not task.done():
            daemon.drain()
            daemon.drain()  # hand back at once
        await asyncio.wait_for(task, 60)


async def serve(relay: Relay, name: str, running: list[Any], **changes: Any) -> Daemon:
    daemon = daemon_for(relay.port, await relay.issue(name), name=name, **changes)
    running.append((daemon, asyncio.create_task(daemon.serve())))
    async with asyncio.timeout(60):
        while name not in [n["name"] for n in await relay.nodes()]:
            await asyncio.sleep(0.05)
    return daemon


@pytest.mark.slow
async def test_cancel_at_30_percent_keeps_a_partial_png_of_the_requested_size(
    start: Start, daemons: list[Any]
) -> None:
    relay = await start(max_size=512)
    await serve(relay, "cpu-1", daemons)  # checkpoints only when it stops
    job_id = await relay.job(method="gatys", style="painting:udnie", epochs="60", size="64")
    events: list[Json] = []
    async with asyncio.timeout(120):
        async with relay.client.ws_connect(f"/api/jobs/{job_id}/events") as ws:
            async for msg in ws:
                event: Json = msg.json()
                events.append(event)
                if event["type"] == "progress" and event["epoch"] >= 18:  # 30% of 60
                    break
        reached = events[-1]["epoch"]
        assert (await relay.client.delete(f"/api/jobs/{job_id}")).status == 200
        while (state := await relay.state(job_id))["partial"] is None:
            await asyncio.sleep(0.1)
    assert state["state"] == "cancelled"
    assert reached <= state["partial"]["epoch"] < 60
    resp = await relay.client.get(state["partial"]["url"])
    assert resp.status == 200
    image = decode(await resp.read())
    assert image.format == "PNG"
    assert max(image.size) == 64 and image.size == (state["width"], state["height"])


@pytest.mark.slow
@pytest.mark.timeout(400)  # a node process starts (torch, its pace measured) on a CPU
async def test_a_node_killed_mid_job_loses_only_the_work_since_its_last_checkpoint(
    start: Start, daemons: list[Any], tmp_path: Path
) -> None:
    relay = await start(max_size=512, heartbeat_interval=1.0)
    token = await relay.issue("doomed")
    cmd = [sys.executable, "-m", "gpu_node", "run", "--relay", f"127.0.0.1:{relay.port}"]
    cmd += ["--token", token, "--name", "doomed", "--device", "cpu"]
    cmd += ["--checkpoint-every", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    doomed = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(90):
            while "doomed" not in [n["name"] for n in await relay.nodes()]:
                await asyncio.sleep(0.1)
        epochs = 120
        job_id = await relay.job(
            method="gatys", style="painting:udnie", epochs=str(epochs), size="64"
        )
        events: list[Json] = []
        watcher = asyncio.create_task(events_until(relay, job_id, {"done", "failed"}, events))
        async with asyncio.timeout(120):
            while (service_of(relay).get(job_id).partial_epoch or 0) < 5:
                await asyncio.sleep(0.05)
        doomed.send_signal(signal.SIGKILL)  # no goodbye, no last checkpoint
        await asyncio.to_thread(doomed.wait, 30)
        kept = service_of(relay).get(job_id).partial_epoch or 0
        await relay.wait_for(job_id, "queued", timeout=30)
        await serve(relay, "rescuer", daemons, checkpoint_every=0.5)
        async with asyncio.timeout(180):
            await watcher
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()
    assert events[-1]["type"] == "done", events[-1]
    requeue = next(i for i, e in enumerate(events) if e["type"] == "queued" and "requeued" in e)
    rerun = [e for e in events[requeue:] if e["type"] == "progress"]
    assert rerun[0]["epoch"] > kept >= 5  # past epoch 0: it went on from the checkpoint
    assert rerun[-1]["epoch"] == epochs
    state = await relay.state(job_id)
    assert state["node"] == "rescuer" and state["attempts"] == 1
    resp = await relay.client.get(state["result_url"])
    assert max(decode(await resp.read()).size) == 64
