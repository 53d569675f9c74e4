"""Live sessions through a real relay: a page's WebSocket on /api/live, fake nodes that
speak the real protocol (version 3) on the node port, and the live messages themselves."""

import asyncio
import contextlib
import io
import itertools
import random
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest
import torch
from aiohttp import ClientWebSocketResponse, WSMsgType, WSServerHandshakeError
from daemon_helpers import FakeRelay, RelaySide, fake_relay
from PIL import Image
from relay_harness import FakeClock, make_config
from wire_node import WireNode, capabilities
from wire_relay import Relay, Start, accept, result_for

from gpu_node.daemon.capabilities import build_capabilities
from gpu_node.daemon.config import NodeConfig
from gpu_node.daemon.daemon import Daemon
from gpu_node.daemon.live import LiveDesk
from gpu_node.daemon.params import NodeCaps
from gpu_node.daemon.runner import JobRunner
from gpu_node.fast.registry import build_registry
from protocol import (
    Connection,
    Drain,
    Hello,
    LiveEnd,
    LiveFrame,
    LiveMessage,
    LiveMissed,
    LiveOpen,
    LivePainted,
    LiveReady,
    LiveRestyle,
    LiveStyle,
    LocalProtocolError,
    Message,
    RemoteProtocolError,
    Role,
    Welcome,
)
from relay import live as relay_live
from relay.dev import node_command
from relay.live import MIN_SIDE, STEER_EVERY, Steering

CANDY = "fast:builtin:candy"


def frame_jpeg(size: tuple[int, int] = (160, 120), fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (30, 140, 90)).save(out, format=fmt)
    return out.getvalue()


def page_frame(seq: int, image: bytes) -> bytes:
    return struct.pack(">BI", 1, seq) + image


class Page:
    """A page's live socket: commands in, events and painted frames out."""

    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.painted: list[int] = []

    async def start(self, style: str = CANDY, side: int = 160) -> None:
        await self.ws.send_json({"type": "start", "style": style, "side": side})

    async def until(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """Read until an event of `kind` (noting painted frames and other events)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type is WSMsgType.BINARY:
                    self.painted.append(struct.unpack_from(">BI", msg.data)[1])
                    if kind == "painted":
                        return {"type": "painted", "seq": self.painted[-1]}
                    continue
                if msg.type is not WSMsgType.TEXT:
                    raise ConnectionError(f"the socket closed before {kind!r}: {self.events}")
                event: dict[str, Any] = msg.json()
                self.events.append(event)
                if event["type"] == kind:
                    return event

    def dropped(self, why: str) -> list[int]:
        return [e["seq"] for e in self.events if e["type"] == "dropped" and e["why"] == why]


async def open_page(relay: Relay, **headers: str) -> Page:
    return Page(await relay.client.ws_connect("/api/live", headers=headers))


async def live_node(relay: Relay, name: str = "gpu-1", slots: int = 2) -> WireNode:
    return await relay.node(name, live=True, slots=slots)


async def ready(node: WireNode, page: Page) -> LiveOpen:
    opened = await node.expect(LiveOpen)
    await node.send(LiveReady(opened.lease_id))
    await page.until("ready")
    return opened


async def paint(node: WireNode, frame: LiveFrame) -> None:
    await node.send(LivePainted(frame.lease_id, frame.seq, frame_jpeg((80, 60)), 0.01))


# ---- the messages ------------------------------------------------------------------------

STYLE = LiveStyle("fast", style_id="builtin:candy")
LIVE_MESSAGES: list[LiveMessage] = [
    LiveOpen("l1", 320, STYLE),
    LiveReady("l1"),
    LiveRestyle("l1", LiveStyle("arbitrary", image=b"\xff\xd8painting")),
    LiveFrame("l1", 7, b"\xff\xd8frame"),
    LivePainted("l1", 7, b"\xff\xd8painted", 0.05),
    LiveMissed("l1", 8, "unreadable"),
    LiveEnd("l1", "stopped"),
]


def pair(versions: tuple[int, ...]) -> tuple[Connection, Connection]:
    relay, node = Connection(Role.RELAY), Connection(Role.NODE)
    relay.receive_data(node.send(Hello(versions, "n", "", "", capabilities(live=True))))
    welcome = Welcome(max(versions), "s1", 5.0, relay.advertised_limits(10, 10_000))
    node.receive_data(relay.send(welcome))
    return relay, node


def test_live_messages_round_trip_byte_by_byte() -> None:
    relay, node = pair((1, 2, 3))
    got: list[object] = []
    for message in LIVE_MESSAGES:
        sender, receiver = (
            (relay, node)
            if isinstance(message, LiveOpen | LiveRestyle | LiveFrame)
            else (node, relay)
        )
        for byte in sender.send(message):
            got += receiver.receive_data(bytes([byte]))
    assert got == LIVE_MESSAGES
    assert relay.version == 3


def test_hello_says_whether_the_node_takes_live_sessions() -> None:
    relay = Connection(Role.RELAY)
    [hello] = relay.receive_data(
        Connection(Role.NODE).send(Hello((3,), "n", "", "", capabilities(live=True)))
    )
    assert isinstance(hello, Hello) and hello.capabilities.live
    [old] = Connection(Role.RELAY).receive_data(
        Connection(Role.NODE).send(Hello((1,), "n", "", "", capabilities()))
    )
    assert isinstance(old, Hello) and not old.capabilities.live


def test_live_messages_are_a_protocol_error_below_version_3() -> None:
    relay, node = pair((1, 2))
    with pytest.raises(LocalProtocolError, match="LiveOpen is new in protocol version 3"):
        relay.send(LiveOpen("l1", 320, STYLE))
    # A relay that speaks v3 sending it anyway: the v2 node refuses it as the peer's fault.
    rogue, _ = pair((1, 2, 3))
    data = rogue.send(LiveOpen("l1", 320, STYLE))
    with pytest.raises(RemoteProtocolError, match="LiveOpen is new in protocol version 3"):
        node.receive_data(data)


def test_live_leases_must_be_open_but_may_cross_an_end() -> None:
    relay, node = pair((3,))
    with pytest.raises(LocalProtocolError, match="not open"):
        relay.send(LiveFrame("nope", 1, b"x"))
    node.receive_data(relay.send(LiveOpen("l1", 160, STYLE)))
    node.receive_data(relay.send(LiveFrame("l1", 1, b"x")))
    end = relay.send(LiveEnd("l1"))
    # The node painted frame 1 before it read the end: the relay takes it (and ignores it).
    painted = LivePainted("l1", 1, b"y", 0.1)
    assert relay.receive_data(node.send(painted)) == [painted]
    node.receive_data(end)
    with pytest.raises(LocalProtocolError, match="reuses"):
        relay.send(LiveOpen("l1", 160, STYLE))
    # A node's live_ready for a lease the relay never opened (raw bytes: our own
    # Connection would refuse to send it).
    body = msgpack.packb({"type": "live_ready", "lease_id": "l9"})
    with pytest.raises(RemoteProtocolError, match="not open"):
        relay.receive_data(struct.pack(">I", len(body)) + body)


def test_steering_lowers_to_a_floor_and_raises_again() -> None:
    steer = Steering(320)
    sides = []
    for _ in range(10):
        for _ in range(STEER_EVERY):
            side = steer.measured(0.9)
        sides.append(side)
    assert sides[0] == 240 and steer.target == MIN_SIDE
    for _ in range(10 * STEER_EVERY):
        steer.measured(0.05)
    assert steer.target == 320


# ---- sessions through the relay ----------------------------------------------------------


async def test_frames_flow_two_in_flight_and_the_oldest_waiting_is_dropped(start: Start) -> None:
    relay = await start()
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start()
    opened = await ready(node, page)
    assert opened.side == 160 and opened.style == STYLE
    for seq in range(1, 6):
        await page.ws.send_bytes(page_frame(seq, frame_jpeg()))
    first, second = await node.expect(LiveFrame), await node.expect(LiveFrame)
    assert (first.seq, second.seq) == (1, 2)
    await page.until("dropped")
    await page.until("dropped")
    assert page.dropped("behind") == [3, 4]  # 5 waits for room; nothing queues beyond it
    await paint(node, first)
    assert (await page.until("painted"))["seq"] == 1
    assert (await node.expect(LiveFrame)).seq == 5
    # Switch the style without stopping.
    await page.ws.send_json({"type": "style", "style": "fast:builtin:mosaic"})
    restyle = await node.expect(LiveRestyle)
    assert restyle.style.style_id == "builtin:mosaic"
    await page.ws.send_json({"type": "stop"})
    assert (await node.expect(LiveEnd)).lease_id == opened.lease_id


async def test_one_live_session_per_client(start: Start) -> None:
    relay = await start()
    node = await live_node(relay, slots=4)
    first = await open_page(relay)
    await first.start()
    await ready(node, first)
    second = await open_page(relay)
    await second.start()
    ended = await second.until("ended")
    assert ended["reason"] == "one_per_client"
    # The first one is unharmed.
    await first.ws.send_bytes(page_frame(1, frame_jpeg()))
    await paint(node, await node.expect(LiveFrame))
    assert (await first.until("painted"))["seq"] == 1


async def test_a_session_ends_at_the_time_limit(start: Start) -> None:
    relay = await start(live_max_seconds=0.3)
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start()
    opened = await ready(node, page)
    ended = await page.until("ended")
    assert ended["reason"] == "time_up" and "0.3 s" in ended["message"]
    assert (await node.expect(LiveEnd)).lease_id == opened.lease_id
    # Its slot and the client's one session are free again.
    again = await open_page(relay)
    await again.start()
    await ready(node, again)


async def test_frames_too_big_unreadable_or_too_fast_are_dropped(start: Start) -> None:
    relay = await start()
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start(side=160)
    await ready(node, page)
    await page.ws.send_bytes(page_frame(1, frame_jpeg((320, 240))))
    await page.ws.send_bytes(page_frame(2, frame_jpeg((160, 120), "PNG")))
    await page.ws.send_bytes(page_frame(3, b"<html>not an image</html>"))
    for _ in range(3):
        event = await page.until("dropped")
        assert event["why"] == "unusable", event
    assert "320x240" in page.events[-3]["detail"]
    # A burst far above the frame rate: most are dropped as too fast; two reach the node.
    for seq in range(10, 60):
        await page.ws.send_bytes(page_frame(seq, frame_jpeg()))
    frames = [await node.expect(LiveFrame), await node.expect(LiveFrame)]
    async with asyncio.timeout(5):
        while len(page.dropped("too_fast")) < 30:
            await page.until("dropped")
    # The session goes on.
    for frame in frames:
        await paint(node, frame)
    await page.until("painted")
    assert page.painted[0] == frames[0].seq


async def test_frames_larger_than_the_relay_allows_are_dropped(start: Start) -> None:
    relay = await start(live_max_side=128)
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start(side=4000)  # asks for more than the relay allows
    opened = await ready(node, page)
    assert opened.side == 128
    await page.ws.send_bytes(page_frame(1, frame_jpeg((160, 120))))
    assert (await page.until("dropped"))["why"] == "unusable"
    await page.ws.send_bytes(page_frame(2, frame_jpeg((128, 96))))
    assert (await node.expect(LiveFrame)).seq == 2


async def test_a_killed_node_hands_the_session_to_another_or_ends_it(start: Start) -> None:
    relay = await start()
    one = await live_node(relay, "gpu-1")
    page = await open_page(relay)
    await page.start()
    await ready(one, page)
    two = await live_node(relay, "gpu-2")
    await page.ws.send_bytes(page_frame(1, frame_jpeg()))
    await one.expect(LiveFrame)
    await one.close()  # killed mid-session, frame 1 in flight
    moved = await two.expect(LiveOpen)
    assert moved.style == STYLE
    event = await page.until("moved")
    assert event["node"] == "gpu-2" and page.dropped("moved") == [1]
    await two.send(LiveReady(moved.lease_id))
    await page.ws.send_bytes(page_frame(2, frame_jpeg()))
    await paint(two, await two.expect(LiveFrame))
    assert (await page.until("painted"))["seq"] == 2
    await two.close()
    ended = await page.until("ended")
    assert ended["reason"] == "node_lost" and "left" in ended["message"]


async def test_a_lease_left_unanswered_moves_on_then_ends(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The relay's timer moves only when the test says (the nodes' silence allows 15 s), so
    # a slow machine cannot make a lease look unanswered.
    monkeypatch.setattr(relay_live, "READY_WITHIN", 2.0)
    timer = FakeClock(1000.0)
    relay = await start(timer=timer, tick_interval=0.05)
    one = await live_node(relay, "gpu-1")
    two = await live_node(relay, "gpu-2")
    page = await open_page(relay)
    await page.start()
    first = await one.expect(LiveOpen)  # gpu-1 never answers
    timer.advance(3.0)
    moved = await page.until("moved", timeout=3)
    assert moved["node"] == "gpu-2"
    assert (await one.expect(LiveEnd)).lease_id == first.lease_id
    second = await two.expect(LiveOpen)  # nor does gpu-2: not back to gpu-1, the end
    timer.advance(3.0)
    ended = await page.until("ended", timeout=3)
    assert ended["reason"] == "node_silent" and "no answer within 2 s" in ended["message"]
    assert (await two.expect(LiveEnd)).lease_id == second.lease_id
    # Both slots were let go: a new session starts on the least busy node again.
    again = await open_page(relay)
    await again.start()
    await ready(one, again)


async def test_a_draining_node_hands_its_sessions_on_and_gets_no_new_ones(start: Start) -> None:
    relay = await start(trusted_proxy=("127.0.0.1/32",))
    one = await live_node(relay, "gpu-1")
    page = await open_page(relay)
    await page.start()
    opened = await ready(one, page)
    await one.send(Drain())
    # No other node: the session stays on the leaving node, and a new one is refused.
    other = await open_page(relay, **{"X-Forwarded-For": "10.1.1.1"})
    await other.start()
    assert (await other.until("ended"))["reason"] == "no_slot"
    await page.ws.send_bytes(page_frame(1, frame_jpeg()))
    await paint(one, await one.expect(LiveFrame))
    assert (await page.until("painted"))["seq"] == 1
    # A node that can take it arrives, then a second node drains: the session moves.
    two = await live_node(relay, "gpu-2")
    three = await live_node(relay, "gpu-3")
    third = await open_page(relay, **{"X-Forwarded-For": "10.1.1.2"})
    await third.start()
    await ready(two, third)
    await two.send(Drain())
    moved = await third.until("moved")
    assert moved["node"] == "gpu-3"
    assert (await two.expect(LiveEnd)).message == "the node is leaving"
    await ready(three, third)
    assert opened.lease_id  # the first session was never moved: gpu-1 had no other to go to
    assert not [e for e in page.events if e["type"] == "moved"]


async def test_queued_jobs_keep_running_beside_live_sessions(start: Start) -> None:
    relay = await start(trusted_proxy=("127.0.0.1/32",))
    node = await live_node(relay, slots=2)
    page = await open_page(relay)
    await page.start()
    await ready(node, page)
    # Live sessions may hold half the slots: a second client finds none free.
    other = await open_page(relay, **{"X-Forwarded-For": "10.1.1.1"})
    await other.start()
    assert (await other.until("ended"))["reason"] == "no_slot"
    job = await relay.job()
    offer = await accept(node)
    assert offer.job_id == job
    await node.send(result_for(offer))
    await relay.wait_for(job, "done")
    # The live session ran on throughout.
    await page.ws.send_bytes(page_frame(1, frame_jpeg()))
    await paint(node, await node.expect(LiveFrame))
    assert (await page.until("painted"))["seq"] == 1


async def test_no_node_that_can_paint_live_says_so(start: Start) -> None:
    relay = await start()
    await relay.node("old", slots=4)  # speaks v3 but its owner said --no-live
    page = await open_page(relay)
    await page.start()
    ended = await page.until("ended")
    assert ended["reason"] == "no_node" and "No connected node" in ended["message"]


async def test_a_node_below_version_3_is_never_offered_live(start: Start) -> None:
    relay = await start()
    node = await relay.dial()
    relay.issued["v2"] = await relay.issue("v2")
    await node.send(Hello((1, 2), "v2", relay.issued["v2"], "t", capabilities(live=True, slots=4)))
    assert (await node.expect(Welcome)).version == 2
    page = await open_page(relay)
    await page.start()
    assert (await page.until("ended"))["reason"] == "no_node"


async def test_sockets_from_other_sites_are_refused(start: Start) -> None:
    relay = await start()
    with pytest.raises(WSServerHandshakeError) as info:
        await relay.client.ws_connect("/api/live", headers={"Origin": "https://evil.example"})
    assert info.value.status == 403


async def test_starting_sessions_counts_against_the_rate_limit(start: Start) -> None:
    relay = await start(rate_per_minute=1)
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start()
    await ready(node, page)
    await page.ws.send_json({"type": "stop"})
    await node.expect(LiveEnd)
    again = await open_page(relay)
    await again.start()
    ended = await again.until("ended")
    assert ended["reason"] == "refused" and "Too many" in ended["message"]


async def test_a_painting_travels_as_an_arbitrary_style(start: Start) -> None:
    relay = await start()
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start(style="painting:starry_night")
    opened = await node.expect(LiveOpen)
    assert opened.style.method == "arbitrary" and opened.style.image
    with Image.open(io.BytesIO(opened.style.image)) as img:
        assert max(img.size) <= 512
    await node.send(LiveEnd(opened.lease_id, "no arbitrary network here"))
    ended = await page.until("ended")
    assert ended["reason"] == "node_ended" and "no arbitrary network" in ended["message"]


async def test_the_frame_size_follows_the_round_trip(start: Start) -> None:
    timer = FakeClock(1000.0)
    relay = await start(timer=timer)
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start(side=160)
    await ready(node, page)
    seqs = itertools.count(1)

    async def round_trips(count: int, seconds: float, size: tuple[int, int]) -> None:
        for _ in range(count):
            timer.advance(1.0)  # never faster than the page may send
            await page.ws.send_bytes(page_frame(next(seqs), frame_jpeg(size)))
            frame = await node.expect(LiveFrame)
            timer.advance(seconds)
            await paint(node, frame)
            await page.until("painted")

    await round_trips(STEER_EVERY, 0.9, (160, 120))  # slow: the node needs 0.9 s a frame
    lowered = await page.until("size")
    assert lowered == {"type": "size", "side": 120, "lowered": True}
    await round_trips(STEER_EVERY, 0.05, (120, 90))  # fast again
    raised = await page.until("size")
    assert raised == {"type": "size", "side": 160, "lowered": False}


# ---- the node's side: a real node daemon dials a fake relay --------------------------------


def welcome_v3(hello: Hello, conn: Connection) -> Message:
    """Accept every node at the highest version it offers."""
    return Welcome(max(hello.versions), "session-1", 5.0, conn.advertised_limits(1000, 10**8))


@contextlib.asynccontextmanager
async def real_node(relay: FakeRelay, **changes: Any) -> AsyncIterator[RelaySide]:
    """A real node daemon (CPU, its real fast engines) connected to `relay`."""
    config = NodeConfig("127.0.0.1", relay.port, "node-token", "live-node", device="cpu")
    config = replace(config, **changes)
    runner = JobRunner(NodeCaps(1000, 4_000_000), build_registry(None), torch.device("cpu"))
    caps = build_capabilities(config, runner.registry, runner.device, runner.methods)
    daemon = Daemon(config, caps, runner, rng=random.Random(0))
    task = asyncio.create_task(daemon.serve())
    try:
        yield await relay.next_session()
    finally:
        daemon.drain()
        daemon.drain()
        await asyncio.wait_for(task, 30)


REAL_STYLE = LiveStyle("fast", style_id="builtin:ochre-sky")
K = TypeVar("K")


async def take(side: RelaySide, kind: type[K]) -> K:
    """The node's next message of `kind` (others skipped)."""
    message = await side.expect(kind)
    assert isinstance(message, kind)
    return message


async def answer(side: RelaySide) -> LivePainted | LiveMissed:
    """The node's next answer to a frame."""
    while True:
        message = await side.next()
        assert message is not None, "the node hung up"
        if isinstance(message, LivePainted | LiveMissed):
            return message


async def test_a_real_node_paints_the_frames_of_two_sessions() -> None:
    async with fake_relay(welcome_v3) as relay, real_node(relay, slots=2) as side:
        assert side.hello is not None and side.hello.capabilities.live
        side.send(LiveOpen("a", 64, REAL_STYLE))
        side.send(LiveOpen("b", 64, LiveStyle("arbitrary", image=frame_jpeg((96, 96)))))
        ready = {(await take(side, LiveReady)).lease_id for _ in range(2)}
        assert ready == {"a", "b"}
        side.send(LiveFrame("a", 1, frame_jpeg((64, 48))))
        side.send(LiveFrame("b", 1, frame_jpeg((64, 48))))
        side.send(LiveFrame("a", 2, frame_jpeg((128, 96))))  # over the session's side
        answers = [await answer(side) for _ in range(3)]
        painted = {(m.lease_id, m.seq): m for m in answers if isinstance(m, LivePainted)}
        assert set(painted) == {("a", 1), ("b", 1)}
        for message in painted.values():
            with Image.open(io.BytesIO(message.jpeg)) as img:
                assert img.format == "JPEG" and img.size == (64, 48)
        [missed] = [m for m in answers if isinstance(m, LiveMissed)]
        assert (missed.lease_id, missed.seq) == ("a", 2) and "64 px" in missed.message
        # A third session is over the node's two slots; a style switch goes on painting.
        side.send(LiveOpen("c", 64, REAL_STYLE))
        refused = await take(side, LiveEnd)
        assert refused.lease_id == "c" and "at most 2" in refused.message
        side.send(LiveRestyle("a", LiveStyle("fast", style_id="builtin:yellow-ink")))
        side.send(LiveFrame("a", 3, frame_jpeg((64, 48))))
        assert (await take(side, LivePainted)).seq == 3


async def test_a_node_whose_owner_said_no_live_refuses_live_sessions() -> None:
    async with fake_relay(welcome_v3) as relay, real_node(relay, no_live=True) as side:
        assert side.hello is not None and not side.hello.capabilities.live
        side.send(LiveOpen("a", 64, REAL_STYLE))
        ended = await take(side, LiveEnd)
        assert "does not take live sessions" in ended.message


def test_a_draining_node_refuses_new_live_leases() -> None:
    runner = JobRunner(NodeCaps(1000, 4_000_000), build_registry(None), torch.device("cpu"))
    sent: list[Message] = []
    desk = LiveDesk(runner, sent.append, enabled=True, slots=2)
    desk.draining = True
    desk.handle(LiveOpen("a", 64, REAL_STYLE))
    assert sent == [LiveEnd("a", "this node is leaving")]
    desk.close()


async def test_the_relay_cap_wins_over_the_size_floor(start: Start) -> None:
    relay = await start(live_max_side=64)
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start(side=32)  # below the floor, and the relay allows less than the floor
    opened = await node.expect(LiveOpen)
    assert opened.side == 64


@pytest.mark.parametrize("share", [0.5, 0.25, 1.0])
def test_make_runs_local_node_has_a_slot_for_the_camera(tmp_path: Path, share: float) -> None:
    # `make run` (relay.dev) must give the live share at least one whole slot of its node.
    config = make_config(tmp_path, live_share=share)
    command = node_command(config, 5678, "cpu")
    slots = int(command[command.index("--slots") + 1])
    assert int(slots * share) >= 1 and slots >= 2
