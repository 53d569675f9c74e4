"""The real node daemon dialling a fake relay that speaks the real protocol on port 0."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import torch
from daemon_helpers import FakeRelay, RelaySide, decode, fake_relay, png, reject_token
from fast_helpers import one_thread

from gpu_node.daemon.capabilities import build_capabilities
from gpu_node.daemon.config import NodeConfig
from gpu_node.daemon.daemon import Daemon
from gpu_node.daemon.params import NodeCaps
from gpu_node.daemon.runner import JobRunner
from gpu_node.fast.registry import build_registry
from protocol import (
    Accept,
    Bye,
    ByeReason,
    Cancel,
    Connection,
    Decline,
    DeclineReason,
    Drain,
    Failure,
    FailureCode,
    Hello,
    Message,
    Offer,
    Ping,
    Pong,
    Preview,
    Progress,
    Reject,
    RejectReason,
    Result,
    Scalar,
    StyleImage,
    Welcome,
)

CONFIG = NodeConfig(
    relay_host="127.0.0.1",
    relay_port=1,
    token="node-token",
    name="test-node",
    device="cpu",
    max_epochs=50,
    max_pixels=200_000,
    backoff_min=0.05,
    backoff_max=0.2,
    drain_grace=60.0,
)
_ids = itertools.count()


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def runner() -> JobRunner:
    # A clock that moves a second per reading lets every Progress and Preview through the
    # throttle, so the tests see each epoch.
    ticks = itertools.count()
    return JobRunner(
        NodeCaps(CONFIG.max_epochs, CONFIG.max_pixels),
        build_registry(None),
        torch.device("cpu"),
        clock=lambda: float(next(ticks)),
    )


@contextlib.asynccontextmanager
async def node(
    relay: FakeRelay, runner: JobRunner, **changes: object
) -> AsyncIterator[tuple[Daemon, asyncio.Task[int]]]:
    config = replace(CONFIG, relay_port=relay.port, **changes)  # type: ignore[arg-type]
    caps = build_capabilities(config, runner.registry, runner.device, runner.methods)
    daemon = Daemon(config, caps, runner, rng=random.Random(0))
    task = asyncio.create_task(daemon.serve())
    try:
        yield daemon, task
    finally:
        if not task.done():
            daemon.drain()
            done, _ = await asyncio.wait({task}, timeout=5)
            if not done:
                daemon.drain()  # hand back whatever still runs
        await asyncio.wait_for(task, 30)


def offer(
    method: str = "gatys",
    params: dict[str, Scalar] | None = None,
    *,
    style_id: str | None = None,
    content: bytes | None = None,
) -> Offer:
    n = next(_ids)
    styles = () if method == "fast" else (StyleImage(png("starry_night.jpg", 40)),)
    return Offer(
        f"job-{n}",
        f"lease-{n}",
        method,
        {"epochs": 3, "size": 48} if params is None else params,
        style_id,
        styles,
        png() if content is None else content,
    )


async def until_final(side: RelaySide) -> tuple[list[Message], Message]:
    """Messages up to and including the job's Result or Failure."""
    seen: list[Message] = []
    while True:
        message = await side.next()
        assert message is not None, f"the node hung up; it had sent {seen}"
        if isinstance(message, Result | Failure):
            return seen, message
        seen.append(message)


async def test_hello_carries_the_nodes_capabilities(runner: JobRunner) -> None:
    async with fake_relay() as relay, node(relay, runner, slots=2):
        side = await relay.next_session()
    hello = side.hello
    assert isinstance(hello, Hello)
    assert (hello.node_name, hello.token, hello.versions) == ("test-node", "node-token", (1, 2, 3))
    caps = hello.capabilities
    assert caps.methods == ("gatys", "fast", "arbitrary")
    assert (caps.max_epochs, caps.max_pixels, caps.slots) == (50, 200_000, 2)
    assert caps.device_name.startswith("CPU") and caps.device_memory > 2**30
    ids = [s.id for s in caps.styles]
    assert len(ids) == 26 and "builtin:starry-blue" in ids
    assert all(s.method == "fast" and s.name for s in caps.styles)
    for style in caps.styles:
        assert style.thumbnail_jpeg is not None
        assert decode(style.thumbnail_jpeg).format == "JPEG"


async def test_a_bad_token_stops_the_daemon_with_status_2(
    runner: JobRunner, caplog: pytest.LogCaptureFixture
) -> None:
    async with fake_relay(reject_token) as relay, node(relay, runner) as (_, task):
        status = await asyncio.wait_for(task, 30)
    assert status == 2
    assert len(relay.hellos) == 1  # no retry: it cannot help
    assert "refused this node: bad_token (unknown or revoked token); not retrying" in caplog.text


async def test_the_daemon_reconnects_with_backoff(
    runner: JobRunner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answers: list[str] = []

    def full_then_welcome(hello: Hello, conn: Connection) -> Message:
        answers.append("reject" if not answers else "welcome")
        if answers[-1] == "reject":
            return Reject(RejectReason.RELAY_FULL, "try later")
        return Welcome(1, f"s{len(answers)}", 5.0, conn.advertised_limits(1000, 10**7))

    async with fake_relay(full_then_welcome) as relay, node(relay, runner) as (daemon, _):
        first = await relay.next_session()  # after the Reject and a backoff
        first.close()  # the relay drops the connection
        assert await first.until_closed() == []
        second = await relay.next_session()
        second.send(Ping(7))
        assert await second.expect(Pong) == Pong(7)
        assert daemon.connections == 3
    assert answers == ["reject", "welcome", "welcome"]
    assert caplog.text.count("backing off") >= 2
    assert "refused this node: relay_full (try later); will try again" in caplog.text
    assert "the relay closed the connection" in caplog.text


async def test_a_silent_relay_is_dropped_after_missed_heartbeats(runner: JobRunner) -> None:
    def quick(hello: Hello, conn: Connection) -> Message:
        return Welcome(1, "quick", 0.05, conn.advertised_limits(1000, 10**7))

    async with fake_relay(quick, answer_pings=False) as relay, node(relay, runner):
        side = await relay.next_session()
        seen = await side.until_closed()
        await relay.next_session()  # and it dials again
    assert [type(m) for m in seen] == [Ping, Ping, Bye]  # gone at the third silent interval
    bye = seen[-1]
    assert isinstance(bye, Bye) and bye.reason is ByeReason.HEARTBEAT_TIMEOUT


async def test_an_offer_above_the_nodes_epoch_cap_is_declined(runner: JobRunner) -> None:
    async with fake_relay() as relay, node(relay, runner):
        side = await relay.next_session()
        job = offer("gatys", {"epochs": 51, "size": 48})
        side.send(job)
        decline = await side.expect(Decline)
    assert isinstance(decline, Decline)
    assert (decline.lease_id, decline.reason) == (job.lease_id, DeclineReason.TOO_LARGE)
    assert "epochs 51 is above this node's cap of 50" in decline.message


@pytest.mark.slow
async def test_a_gatys_job_streams_progress_and_previews_then_its_result(
    runner: JobRunner,
) -> None:
    async with fake_relay() as relay, node(relay, runner):
        side = await relay.next_session()
        job = offer("gatys", {"epochs": 3, "size": 48, "seed": 3})
        side.send(job)
        assert await side.next() == Accept(job.job_id, job.lease_id)
        # heartbeats are answered while the engine works on its thread
        pongs = 0
        seen: list[Message] = []
        final: Message | None = None
        for nonce in itertools.count(1):
            side.send(Ping(nonce))
            while True:
                message = await side.next()
                assert message is not None
                if message == Pong(nonce):
                    pongs += 1
                    break
                seen.append(message)
                if isinstance(message, Result | Failure):
                    final = message
                    break
            if final is not None:
                break
            await asyncio.sleep(0.2)
    # A Pong came back while the job ran (the loop stops at the Result): the heartbeat did not
    # wait for the engine. How many fit in depends on the machine's speed, so only one is owed.
    assert pongs >= 1
    assert isinstance(final, Result), final
    assert final.sha256 == hashlib.sha256(final.png).hexdigest()
    image = decode(final.png)
    assert image.format == "PNG" and image.size == (final.width, final.height) == (48, 32)
    epochs = [m.epoch for m in seen if isinstance(m, Progress)]
    assert epochs == [1, 2, 3]
    previews = [m for m in seen if isinstance(m, Preview)]
    assert previews and decode(previews[0].jpeg).size == (48, 32)


async def test_a_fast_job_with_a_builtin_style_runs_to_a_result(runner: JobRunner) -> None:
    async with fake_relay() as relay, node(relay, runner):
        side = await relay.next_session()
        job = offer("fast", {"size": 48}, style_id="builtin:starry-blue")
        side.send(job)
        seen, final = await until_final(side)
    assert isinstance(seen[0], Accept)
    assert isinstance(final, Result) and (final.width, final.height) == (48, 32)


@pytest.mark.slow
async def test_cancel_stops_a_running_job_within_an_epoch(runner: JobRunner) -> None:
    async with fake_relay() as relay, node(relay, runner):
        side = await relay.next_session()
        job = offer("gatys", {"epochs": 40, "size": 48})
        side.send(job)
        first = await side.expect(Progress)
        assert isinstance(first, Progress) and first.epoch == 1
        side.send(Cancel(job.job_id, job.lease_id))
        seen, final = await until_final(side)
    assert isinstance(final, Failure)
    assert (final.lease_id, final.code) == (job.lease_id, FailureCode.CANCELLED)
    # epoch 2 may have been under way when the Cancel came; epoch 3 never starts
    assert max((m.epoch for m in seen if isinstance(m, Progress)), default=1) <= 2


async def test_a_corrupt_image_fails_the_job_and_the_node_keeps_serving(
    runner: JobRunner,
) -> None:
    async with fake_relay() as relay, node(relay, runner):
        side = await relay.next_session()
        bad = offer("fast", {"size": 48}, style_id="builtin:sepia-oil", content=png()[:300])
        side.send(bad)
        _, failure = await until_final(side)
        good = offer("fast", {"size": 48}, style_id="builtin:sepia-oil")
        side.send(good)
        _, result = await until_final(side)
    assert isinstance(failure, Failure) and failure.code is FailureCode.INVALID_INPUT
    assert failure.message.startswith("the content image: corrupt")
    assert isinstance(result, Result) and result.lease_id == good.lease_id


@pytest.mark.slow
async def test_drain_finishes_the_running_job_then_says_bye(runner: JobRunner) -> None:
    async with fake_relay() as relay, node(relay, runner) as (daemon, task):
        side = await relay.next_session()
        job = offer("gatys", {"epochs": 3, "size": 48})
        side.send(job)
        await side.expect(Progress)
        daemon.drain()  # what SIGTERM does
        rest = await side.until_closed()
        status = await asyncio.wait_for(task, 30)
    kinds = [type(m) for m in rest if not isinstance(m, Progress | Preview)]
    assert kinds == [Drain, Result, Bye]
    bye = rest[-1]
    assert isinstance(bye, Bye) and bye.reason is ByeReason.DRAINED
    assert status == 0


async def test_drain_hands_back_a_job_that_outlasts_the_grace(runner: JobRunner) -> None:
    async with fake_relay() as relay, node(relay, runner, drain_grace=0.2) as (daemon, task):
        side = await relay.next_session()
        side.send(offer("gatys", {"epochs": 40, "size": 48}))
        await side.expect(Progress)
        daemon.drain()
        rest = await side.until_closed()
        status = await asyncio.wait_for(task, 30)
    kinds = [type(m) for m in rest if not isinstance(m, Progress | Preview)]
    assert kinds == [Drain, Bye]  # no Failure: the relay requeues the job
    bye = rest[-1]
    assert isinstance(bye, Bye) and bye.reason is ByeReason.SHUTDOWN
    assert "1 job(s) handed back" in bye.message
    assert status == 0


async def test_drain_while_disconnected_stops_at_once(runner: JobRunner) -> None:
    relay = FakeRelay()
    await relay.start()
    await relay.stop()  # nothing listens on that port now
    async with node(relay, runner, backoff_min=5.0, backoff_max=5.0) as (daemon, task):
        await asyncio.sleep(0.2)
        daemon.drain()
        assert await asyncio.wait_for(task, 5) == 0


async def test_a_quiet_relay_that_answers_pings_is_kept(runner: JobRunner) -> None:
    def quick(hello: Hello, conn: Connection) -> Message:
        return Welcome(1, "quick", 0.05, conn.advertised_limits(1000, 10**7))

    async with fake_relay(quick) as relay, node(relay, runner) as (daemon, _):
        await relay.next_session()
        await asyncio.sleep(0.5)  # ten heartbeat intervals without a word from the relay
        assert daemon.connections == 1
        assert daemon.session is not None and daemon.session.welcome is not None
