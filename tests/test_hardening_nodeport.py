"""Hardening of the node port (issue 11): unauthenticated connections, failed tokens,
flooding nodes, what nodes advertise, and offers that cannot be sent. Real relay, real TCP,
fake nodes speaking the real protocol."""

import asyncio
import gc
import logging
import struct
import tracemalloc

import pytest
from relay_harness import FakeClock, jpeg
from wire_node import WireNode, capabilities
from wire_relay import Relay, Start, accept, result_for

from protocol import (
    MAX_HELLO_SIZE,
    Bye,
    ByeReason,
    Connection,
    Hello,
    Ping,
    Pong,
    Preview,
    Progress,
    Reject,
    RejectReason,
    RemoteProtocolError,
    Role,
    StyleInfo,
    Welcome,
)
from relay.api import SERVICE
from relay.app import NODE_LISTENER
from relay.events import Subscription
from relay.hub import RECENT_FAST_STYLES
from relay.reportmeter import FLOOD_FACTOR, FLOOD_SECONDS, PER_SECOND, Report
from relay.reports import NodeReports


async def dial_from(relay: Relay, host: str) -> WireNode:
    """A connection from another loopback address (127.0.0.0/8 is all local on Linux)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port, local_addr=(host, 0))
    node = WireNode(reader, writer)
    relay.dialled.append(node)
    return node


async def still_open(node: WireNode) -> bool:
    """True if the relay has not closed the connection (nothing arrives in 0.2 s)."""
    try:
        return not await node.closed_by_relay(timeout=0.2)
    except TimeoutError:
        return True


async def barrier(node: WireNode, nonce: int) -> None:
    """Wait until the relay has handled everything the node sent before."""
    await node.send(Ping(nonce))
    while (await node.expect(Pong)).nonce != nonce:
        pass


async def drain(sub: Subscription) -> list[str]:
    """The types of the events published to `sub` so far (those it dropped as "dropped")."""
    types = ["dropped"] * sub.dropped
    sub.dropped = 0
    while True:
        try:
            async with asyncio.timeout(0.05):
                types.append((await sub.get())["type"])
        except TimeoutError:
            return types


# ---- unauthenticated connections ---------------------------------------------------------


async def test_pending_connections_beyond_the_caps_are_closed_at_once(start: Start) -> None:
    relay = await start(handshake_timeout=30, max_pending_per_address=3, max_pending_nodes=5)
    silent = [await dial_from(relay, "127.0.0.1") for _ in range(3)]
    assert all([await still_open(n) for n in silent])
    fourth = await dial_from(relay, "127.0.0.1")
    assert await fourth.closed_by_relay(timeout=2.0)  # per address
    others = [await dial_from(relay, "127.0.0.2") for _ in range(2)]
    assert all([await still_open(n) for n in others])
    sixth = await dial_from(relay, "127.0.0.3")
    assert await sixth.closed_by_relay(timeout=2.0)  # in total
    # A pending connection that goes makes room, and a welcomed node is no longer pending.
    await silent[0].close()
    await asyncio.sleep(0.1)
    node = await dial_from(relay, "127.0.0.3")
    token = await relay.issue("gpu-1")
    await node.hello(token, "gpu-1")
    await node.expect(Welcome)
    latecomer = await dial_from(relay, "127.0.0.4")
    assert await still_open(latecomer)
    assert [n["name"] for n in await relay.nodes()] == ["gpu-1"]


async def test_unfinished_big_frames_leave_no_memory_once_closed(start: Start) -> None:
    relay = await start(handshake_timeout=30)
    listener = relay.client.app[NODE_LISTENER]
    count, size = 8, MAX_HELLO_SIZE - 1024
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # Not kept in relay.dialled: their own Connections would count as retained.
        nodes = [await WireNode.dial(relay.port) for _ in range(count)]
        for node in nodes:
            await node.send_raw(struct.pack(">I", size) + b"\x81" * (size - 64 * 1024))
        extra = await WireNode.dial(relay.port)  # the (count+1)th: closed unread
        assert await extra.closed_by_relay(timeout=2.0)
        await extra.close()
        await asyncio.sleep(0.3)
        held = tracemalloc.get_traced_memory()[0] - before
        for node in nodes:
            await node.close()
        del nodes, node, extra
        async with asyncio.timeout(5):
            while listener.gate.pending:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        gc.collect()
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held > count * (size - 64 * 1024) // 2  # the frames were buffered...
    assert left < 512 * 1024  # ...and nothing of them stayed
    assert await relay.nodes() == []


async def test_a_frame_larger_than_a_hello_is_refused_before_the_handshake(start: Start) -> None:
    relay = await start()
    node = await relay.dial()
    await node.send_raw(struct.pack(">I", MAX_HELLO_SIZE + 1) + b"\x81" * 1024)
    assert await node.closed_by_relay(timeout=2.0)
    # A node with many styles and thumbnails (about the 26 built-ins' 270 KiB) is welcome.
    thumbnail = b"\xff\xd8\xff" + bytes(10_400)
    styles = tuple(StyleInfo(f"s{i}", f"Style {i}", "fast", thumbnail) for i in range(26))
    welcomed = await relay.node("gpu-big", styles=styles)
    assert [n["name"] for n in await relay.nodes()] == ["gpu-big"]
    await welcomed.close()


def test_the_relay_connection_takes_full_frames_only_after_hello() -> None:
    big = struct.pack(">I", MAX_HELLO_SIZE + 1) + b"\xc1" * (MAX_HELLO_SIZE + 1)
    fresh = Connection(Role.RELAY)
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        fresh.receive_data(big)
    node, relay = Connection(Role.NODE), Connection(Role.RELAY)
    relay.receive_data(node.send(Hello((1,), "n", "t", "v", capabilities())))
    with pytest.raises(RemoteProtocolError, match="not valid msgpack"):
        relay.receive_data(big)  # the size passed; only the garbage body failed


# ---- failed tokens ---------------------------------------------------------------------------


async def test_failed_tokens_are_limited_per_address_and_logged_once_a_minute(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    timer = FakeClock()
    relay = await start(timer=timer, token_failures_per_minute=3)
    caplog.set_level(logging.INFO, logger="relay")
    for _ in range(3):
        node = await relay.dial()
        await node.hello("wrong-token")
        assert (await node.expect(Reject)).reason is RejectReason.BAD_TOKEN
    token = await relay.issue("gpu-1")
    for attempt in ("wrong-token", token):  # over the limit: not even a good token is checked
        node = await relay.dial()
        await node.hello(attempt, "gpu-1")
        with pytest.raises(ConnectionError):
            await node.next(timeout=2.0)
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.WARNING, refused
    timer.advance(61)
    relay.issued["gpu-1"] = token
    await relay.node("gpu-1")
    summary = [r.getMessage() for r in caplog.records if "more node connection" in r.getMessage()]
    assert summary == ["4 more node connection(s) from 127.0.0.1 refused in a minute"]


# ---- reports from nodes ------------------------------------------------------------------


async def test_progress_and_previews_beyond_the_allowance_are_dropped(start: Start) -> None:
    timer = FakeClock()
    relay = await start(timer=timer)
    node = await relay.node()
    job_id = await relay.job()
    offer = await accept(node)
    sub = relay.client.app[SERVICE].bus.subscribe(job_id)
    for epoch in range(1, 101):
        await node.send(Progress(offer.job_id, offer.lease_id, epoch, 500, {}, 0.1))
        if epoch % 10 == 0:
            await node.send(Preview(offer.job_id, offer.lease_id, epoch, jpeg()))
    await barrier(node, 1)
    events = await drain(sub)
    assert events.count("progress") == PER_SECOND[Report.PROGRESS]
    assert events.count("preview") == PER_SECOND[Report.PREVIEW]
    timer.advance(1.0)  # the next second has its own allowance
    await node.send(Progress(offer.job_id, offer.lease_id, 101, 500, {}, 0.1))
    await barrier(node, 2)
    assert await drain(sub) == ["progress"]
    await node.send(result_for(offer))
    await relay.wait_for(job_id, "done")


async def test_a_node_that_floods_is_dropped_and_its_job_requeued(start: Start) -> None:
    timer = FakeClock()
    relay = await start(timer=timer)
    node = await relay.node()
    job_id = await relay.job()
    offer = await accept(node)
    burst = FLOOD_FACTOR * PER_SECOND[Report.PROGRESS] + 50
    progress = Progress(offer.job_id, offer.lease_id, 1, 500, {}, 0.1)
    frame = node.conn.send(progress)
    for second in range(FLOOD_SECONDS):
        # Sent as raw copies of one frame: the flood, not the fake node, is the point here.
        await node.send_raw(frame * burst)
        if second < FLOOD_SECONDS - 1:
            await barrier(node, second + 1)
            timer.advance(1.0)
    while not isinstance(message := await node.next(), Bye):
        pass
    assert message.reason is ByeReason.PROTOCOL_ERROR
    assert await node.closed_by_relay()
    state = await relay.state(job_id)
    assert (state["state"], state["attempts"]) == ("queued", 1)
    assert await relay.nodes() == []


# ---- what nodes advertise ----------------------------------------------------------------


async def test_fast_styles_of_nodes_that_left_stay_bounded(start: Start) -> None:
    relay = await start()
    reports = NodeReports(relay.client.app[SERVICE])
    for round_ in range(6):
        styles = tuple(StyleInfo(f"r{round_}-{i}", "S", "fast") for i in range(256))
        node = await relay.node(styles=styles)
        await node.close()
        async with asyncio.timeout(5):
            while await relay.nodes():
                await asyncio.sleep(0.02)
    assert len(reports.hub.known_fast) == RECENT_FAST_STYLES
    assert "r5-0" in reports.hub.known_fast and "r0-0" not in reports.hub.known_fast
    # A job may still ask for a style of a node that left a moment ago; it waits for one.
    waiting = await relay.job(style="fast:r5-7")
    assert (await relay.state(waiting))["state"] == "queued"
    resp = await relay.client.post("/api/jobs", json={"image": "", "style": "fast:r0-0"})
    assert resp.status == 400
    assert "Unknown style" in (await resp.json())["error"]


# ---- offers that cannot be sent ----------------------------------------------------------


@pytest.mark.single_relay("it changes the job record a single relay holds in memory")
async def test_an_offer_that_cannot_be_encoded_fails_only_its_job(start: Start) -> None:
    relay = await start()
    good = await relay.job(style="painting:starry_night", epochs="5")
    bad = await relay.job(style="painting:starry_night", epochs="5")
    params = relay.client.app[SERVICE].get(bad).params
    assert isinstance(params, dict)
    params["strength"] = 2**70  # past admission: no codec carries it
    node = await relay.node(slots=2)
    offer = await accept(node)
    assert offer.job_id == good
    failed = await relay.wait_for(bad, "failed")
    assert "the relay could not send this job to a node" in failed["error"]
    await barrier(node, 1)  # still connected
    await node.send(result_for(offer))
    done = await relay.wait_for(good, "done")
    assert done["attempts"] == 0
    [listed] = await relay.nodes()
    assert (listed["name"], listed["busy_slots"]) == ("gpu-1", 0)
    again = await relay.job(style="painting:starry_night")  # the failed job's slot is free again
    assert (await accept(node)).job_id == again
