"""Live mode probed as an attacker would: hostile pages on /api/live and hostile nodes on
the node port, against a real relay. After each, the live slots held at the scheduler must
be exactly those of the sessions still open."""

import asyncio
import io
import socket
import struct
from collections import Counter

import msgpack
import pytest
import torch
from aiohttp import WSMsgType
from PIL import Image, ImageChops
from relay_harness import FakeClock
from test_live_relay import (
    CANDY,
    Page,
    frame_jpeg,
    live_node,
    open_page,
    page_frame,
    paint,
    ready,
)
from wire_node import WireNode
from wire_relay import Relay, Start

from gpu_node.daemon import live as live_desk
from gpu_node.daemon.live import LiveDesk
from gpu_node.daemon.params import NodeCaps
from gpu_node.daemon.runner import JobRunner
from gpu_node.fast.registry import build_registry
from protocol import (
    Drain,
    LiveEnd,
    LiveFrame,
    LiveMissed,
    LiveOpen,
    LivePainted,
    LiveReady,
    LiveRestyle,
    LiveStyle,
    Message,
)
from relay import api, live_api
from relay import live as relay_live
from relay.live import RESTYLE_EVERY, check_image

MOSAIC = "fast:builtin:mosaic"


def live_held(relay: Relay) -> dict[str, int]:
    """Slots each node's live sessions hold at the scheduler."""
    scheduler = relay.client.app[api.SERVICE].scheduler
    return {name: node.live for name, node in scheduler._nodes.items()}


async def closed(page: Page, timeout: float = 5.0) -> list[dict[str, object]]:
    """Read the socket to its close; the JSON events it carried."""
    events = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await page.ws.receive()
            if msg.type is WSMsgType.TEXT:
                events.append(msg.json())
            elif msg.type is not WSMsgType.BINARY:
                return events


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose header says it is `width` x `height` (a decompression bomb)."""
    data = bytearray(frame_jpeg((32, 32)))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def frames_of_every_kind() -> dict[str, bytes]:
    green = Image.new("RGB", (64, 48), (30, 140, 90))
    red = Image.new("RGB", (64, 48), (200, 0, 0))
    return {
        "cmyk jpeg": encoded(green.convert("CMYK"), "JPEG"),
        "grey jpeg": encoded(green.convert("L"), "JPEG"),
        "animated webp": encoded(green, "WEBP", save_all=True, append_images=[red]),
        "transparent webp": encoded(green.convert("RGBA"), "WEBP"),
        "progressive jpeg": encoded(green, "JPEG", progressive=True),
        "cut-off jpeg": encoded(green, "JPEG")[:630],  # inside its pixels
        "bomb jpeg": jpeg_claiming(4000, 3000),
        "png": encoded(green, "PNG"),
        "gif": encoded(green, "GIF"),
        "bmp": encoded(green, "BMP"),
        "tiny jpeg": encoded(green.resize((8, 6)), "JPEG"),
        "empty": b"",
    }


def test_the_relay_takes_jpeg_and_webp_frames_within_the_side_only() -> None:
    taken = set()
    for name, data in frames_of_every_kind().items():
        try:
            check_image(data, 160)
        except ValueError:
            continue
        taken.add(name)
    # A cut-off JPEG has a whole header: the node finds out, and says so (below).
    assert taken == {
        "cmyk jpeg",
        "grey jpeg",
        "animated webp",
        "transparent webp",
        "progressive jpeg",
        "cut-off jpeg",
    }


# ---- hostile pages -------------------------------------------------------------------------


async def test_a_restyle_flood_reaches_the_node_as_one_restyle_at_a_time(start: Start) -> None:
    timer = FakeClock(1000.0)
    relay = await start(timer=timer)
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start()
    opened = await ready(node, page)
    styles = [MOSAIC, CANDY] * 20 + [MOSAIC]
    for style in styles:  # 41 changes at once: each would carry a style to the node
        await page.ws.send_json({"type": "style", "style": style})
    assert (await node.expect(LiveRestyle)).style.style_id == "builtin:mosaic"
    # The rest wait for the gap; the next frame after it brings the last one asked for.
    timer.advance(RESTYLE_EVERY)
    await page.ws.send_bytes(page_frame(1, frame_jpeg()))
    last = await node.expect(LiveRestyle)
    assert (last.lease_id, last.style.style_id) == (opened.lease_id, "builtin:mosaic")
    assert (await node.expect(LiveFrame)).seq == 1
    assert live_held(relay) == {"gpu-1": 1}


async def test_an_own_style_image_larger_than_nodes_read_is_refused(start: Start) -> None:
    relay = await start()
    node = await live_node(relay)
    page = await open_page(relay)
    # 59 KB of PNG that a node would spend 0.4 s of CPU decoding, twice a second.
    await page.ws.send_bytes(b"\x02" + encoded(Image.new("RGB", (4096, 4096)), "PNG"))
    error = await page.until("error")
    assert "4096x4096" in error["error"] and "1024" in error["error"]
    await page.ws.send_bytes(b"\x02" + encoded(Image.new("RGB", (1024, 768)), "PNG"))
    await page.start(style="image")
    opened = await ready(node, page)
    assert opened.style.image is not None and len(opened.style.image) < 100_000


async def test_a_painting_is_made_ready_for_nodes_once(start: Start) -> None:
    relay = await start()
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start(style="painting:starry_night")
    opened = await ready(node, page)
    reads = live_api._painting_jpeg.cache_info().misses
    for _ in range(30):  # each would read, shrink and encode the painting again
        await page.ws.send_json({"type": "style", "style": "painting:starry_night"})
    await page.ws.send_json({"type": "style", "style": "painting:the_scream"})
    await page.ws.send_json({"type": "stop"})
    assert (await node.expect(LiveRestyle)).style.image == opened.style.image
    await node.expect(LiveEnd)
    assert live_api._painting_jpeg.cache_info().misses - reads <= 1


async def test_a_number_reused_does_not_put_more_frames_at_the_node(start: Start) -> None:
    relay = await start()
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start()
    await ready(node, page)
    for _ in range(6):  # the relay counts frames at the node by their numbers
        await page.ws.send_bytes(page_frame(7, frame_jpeg()))
    await page.ws.send_bytes(page_frame(8, frame_jpeg()))
    assert [(await node.expect(LiveFrame)).seq for _ in range(2)] == [7, 8]
    for _ in range(5):
        event = await page.until("dropped")
        assert (event["seq"], event["why"]) == (7, "unusable")
    # Nothing more reached the node: its next message is about the next frame.
    await page.ws.send_bytes(page_frame(9, frame_jpeg()))
    await page.ws.send_json({"type": "stop"})
    await node.expect(LiveEnd)
    assert live_held(relay) == {"gpu-1": 0}


async def test_a_page_that_sends_only_garbage_is_cut_off(start: Start) -> None:
    relay = await start()
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start()
    await ready(node, page)
    # Never reading, it sends garbage of every kind: each would queue an error for it.
    for i in range(300):
        await page.ws.send_str("not json" if i % 3 else '{"type": "dance"}')
        await page.ws.send_bytes(b"\x07" + bytes(8))
    events = await closed(page)
    errors = [e for e in events if e["type"] == "error"]
    assert 0 < len(errors) <= 40
    assert events[-1]["type"] == "ended" and events[-1]["reason"] == "bad_messages"
    assert live_held(relay) == {"gpu-1": 0}


async def test_a_message_over_the_size_limit_closes_the_socket_and_frees_the_slot(
    start: Start,
) -> None:
    relay = await start()
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start()
    opened = await ready(node, page)
    await page.ws.send_bytes(page_frame(1, bytes(600 * 1024)))
    await closed(page)
    assert (await node.expect(LiveEnd)).lease_id == opened.lease_id
    async with asyncio.timeout(5):
        while relay.client.app[api.SOCKETS] or pumps():
            await asyncio.sleep(0.02)
    assert live_held(relay) == {"gpu-1": 0}


async def test_a_page_that_never_reads_is_not_buffered_for(start: Start) -> None:
    timer = FakeClock(1000.0)
    relay = await start(timer=timer)
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start(side=160)
    await ready(node, page)
    # From here the page reads nothing. Big painted frames (a whole header, then padding)
    # fill the socket's buffers (kept small), so what comes next queues at the relay.
    page.ws.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    big = frame_jpeg((160, 120)) + bytes(400 * 1024)
    for seq in range(1, 31):  # 12 MB: more than the buffers of a socket hold
        timer.advance(1.0)
        await page.ws.send_bytes(page_frame(seq, frame_jpeg()))
        frame = await node.expect(LiveFrame)
        await node.send(LivePainted(frame.lease_id, frame.seq, big, 0.01))
    # Garbage, each followed by a good message (an own style image), so never 20 in a row.
    own = b"\x02" + frame_jpeg((64, 48))
    for _ in range(300):
        await page.ws.send_str("not json")
        await page.ws.send_bytes(own)
    await page.ws.send_json({"type": "stop"})
    painted, events = 0, []
    async with asyncio.timeout(10):
        while (msg := await page.ws.receive()).type in (WSMsgType.TEXT, WSMsgType.BINARY):
            if msg.type is WSMsgType.BINARY:
                painted += 1
            else:
                events.append(msg.json())
    errors = [e for e in events if e["type"] == "error"]
    assert painted < 30 and len(errors) < 100  # left out, not kept for it
    assert events[-1]["type"] == "ended"
    assert live_held(relay) == {"gpu-1": 0}


async def test_deeply_nested_json_is_an_error_not_a_crash(start: Start) -> None:
    relay = await start()
    node = await live_node(relay)
    page = await open_page(relay)
    await page.ws.send_str("[" * 2000 + "]" * 2000)
    assert "JSON" in (await page.until("error"))["error"]
    await page.start()  # the socket goes on
    await ready(node, page)


def pumps() -> list[asyncio.Task[object]]:
    """The relay's tasks that send pages their live events."""
    return [t for t in asyncio.all_tasks() if "_Socket.pump" in repr(t.get_coro())]


async def test_a_page_that_hangs_up_leaves_nothing_behind(start: Start) -> None:
    relay = await start()
    node = await live_node(relay)
    for _ in range(3):
        page = await open_page(relay)
        await page.ws.send_bytes(b"\x02" + frame_jpeg((400, 300)))  # an own style, kept
        await page.start()
        opened = await ready(node, page)
        await page.ws.close()  # the tab closed
        assert (await node.expect(LiveEnd)).lease_id == opened.lease_id
    async with asyncio.timeout(5):
        while relay.client.app[api.SOCKETS] or pumps():
            await asyncio.sleep(0.02)
    assert live_held(relay) == {"gpu-1": 0}
    assert relay.client.app[api.SERVICE].live_sessions._sockets == {}


async def test_one_client_holds_at_most_two_live_sockets(start: Start) -> None:
    relay = await start(trusted_proxy=("127.0.0.1/32",))
    node = await live_node(relay, slots=4)
    own = b"\x02" + frame_jpeg((400, 300))
    first, second = await open_page(relay), await open_page(relay)
    for page in (first, second):
        await page.ws.send_bytes(own)  # each socket keeps an own style image
    third = await open_page(relay)
    ended = await closed(third)
    assert ended[-1]["type"] == "ended" and ended[-1]["reason"] == "too_many_sockets"
    # Another client is unharmed, and a socket closed makes room again.
    other = await open_page(relay, **{"X-Forwarded-For": "10.1.1.1"})
    await other.start()
    await ready(node, other)
    await first.ws.close()
    await admitted(relay, node)
    assert live_held(relay) == {"gpu-1": 2}


async def admitted(relay: Relay, node: WireNode) -> Page:
    """A page of this client whose session reached the node (retried while the relay has
    not yet let go of a socket just closed)."""
    async with asyncio.timeout(5):
        while True:
            page = await open_page(relay)
            await page.start()
            refused = asyncio.ensure_future(page.until("ended"))
            opened = asyncio.ensure_future(node.expect(LiveOpen))
            done, pending = await asyncio.wait({refused, opened}, return_when="FIRST_COMPLETED")
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if opened in done:
                await node.send(LiveReady(opened.result().lease_id))
                await page.until("ready")
                return page
            assert refused.result()["reason"] == "too_many_sockets"
            await page.ws.close()
            await asyncio.sleep(0.02)


# ---- hostile nodes -------------------------------------------------------------------------


async def test_painted_frames_that_are_no_fit_image_never_reach_the_page(start: Start) -> None:
    relay = await start()
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start(side=160)
    await ready(node, page)
    await page.ws.send_bytes(page_frame(1, frame_jpeg()))
    await page.ws.send_bytes(page_frame(2, frame_jpeg()))
    one, two = await node.expect(LiveFrame), await node.expect(LiveFrame)
    await node.send(LivePainted(one.lease_id, 1, jpeg_claiming(30000, 30000), 0.01))
    await node.send(LivePainted(two.lease_id, 2, b"<script>alert(1)</script>", 0.01))
    for seq in (1, 2):
        event = await page.until("dropped")
        assert (event["seq"], event["why"]) == (seq, "node")
    assert page.painted == []
    # The session goes on: the frames' places at the node are free again.
    await page.ws.send_bytes(page_frame(3, frame_jpeg()))
    await paint(node, await node.expect(LiveFrame))
    assert (await page.until("painted"))["seq"] == 3
    assert live_held(relay) == {"gpu-1": 1}


async def test_a_nodes_stray_live_messages_are_ignored(start: Start) -> None:
    relay = await start()
    node = await live_node(relay)
    page = await open_page(relay)
    await page.start()
    opened = await ready(node, page)
    await page.ws.send_bytes(page_frame(1, frame_jpeg()))
    frame = await node.expect(LiveFrame)
    await node.send(LiveReady(opened.lease_id))  # twice
    await node.send(LivePainted(opened.lease_id, 999, frame_jpeg((80, 60)), 0.01))  # never sent
    await node.send(LiveMissed(opened.lease_id, 998, "never sent either"))
    await paint(node, frame)
    await paint(node, frame)  # the same frame twice
    assert (await page.until("painted"))["seq"] == 1
    await page.ws.send_bytes(page_frame(2, frame_jpeg()))
    await paint(node, await node.expect(LiveFrame))
    assert (await page.until("painted"))["seq"] == 2
    assert page.painted == [1, 2] and not page.dropped("node")
    assert [e["type"] for e in page.events].count("ready") == 1
    assert live_held(relay) == {"gpu-1": 1}


async def test_a_node_that_stops_painting_hands_the_session_on(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The relay's timer moves only when the test says (the nodes' silence allows 15 s).
    monkeypatch.setattr(relay_live, "PAINT_WITHIN", 2.0)
    timer = FakeClock(1000.0)
    relay = await start(timer=timer, tick_interval=0.05)
    one = await live_node(relay, "gpu-1")
    page = await open_page(relay)
    await page.start()
    opened = await ready(one, page)
    two = await live_node(relay, "gpu-2")
    await page.ws.send_bytes(page_frame(1, frame_jpeg()))
    await one.expect(LiveFrame)  # and never answered: the page would wait for ever
    timer.advance(3.0)
    moved = await page.until("moved", timeout=3)
    assert moved["node"] == "gpu-2" and page.dropped("moved") == [1]
    assert (await one.expect(LiveEnd)).lease_id == opened.lease_id
    await ready(two, page)
    await page.ws.send_bytes(page_frame(2, frame_jpeg()))
    frame = await two.expect(LiveFrame)
    await paint(two, frame)
    assert (await page.until("painted"))["seq"] == 2
    assert live_held(relay) == {"gpu-1": 0, "gpu-2": 1}
    # gpu-2 stalls too, and gpu-1 is not asked again: the session ends.
    await page.ws.send_bytes(page_frame(3, frame_jpeg()))
    await two.expect(LiveFrame)
    timer.advance(3.0)
    ended = await page.until("ended", timeout=3)
    assert ended["reason"] == "node_silent" and "painted" in ended["message"]
    assert live_held(relay) == {"gpu-1": 0, "gpu-2": 0}


async def test_a_node_that_paints_nothing_usable_hands_the_session_on(start: Start) -> None:
    timer = FakeClock(1000.0)
    relay = await start(timer=timer)
    one = await live_node(relay, "gpu-1")
    page = await open_page(relay)
    await page.start()
    opened = await ready(one, page)
    two = await live_node(relay, "gpu-2")
    # gpu-1 answers every frame, but never with a painting (a missed, or bytes no image).
    for seq in range(1, 100):
        timer.advance(1.0)
        await page.ws.send_bytes(page_frame(seq, frame_jpeg()))
        message = await one.next()
        if isinstance(message, LiveEnd):
            break
        assert isinstance(message, LiveFrame)
        if seq % 2:
            await one.send(LiveMissed(message.lease_id, seq, "out of memory"))
        else:
            await one.send(LivePainted(message.lease_id, seq, b"garbage", 0.01))
        assert (await page.until("dropped"))["why"] == "node"
    assert isinstance(message, LiveEnd) and message.lease_id == opened.lease_id, message
    assert "in a row" in message.message and seq <= 21
    assert (await page.until("moved"))["node"] == "gpu-2"
    await ready(two, page)
    assert live_held(relay) == {"gpu-1": 0, "gpu-2": 1}


def consistent(relay: Relay) -> dict[str, int]:
    """Each node's live slots at the scheduler: exactly its sessions' leases."""
    sessions = relay.client.app[api.SERVICE].live_sessions._sessions.values()
    leased = Counter(s.node.name for s in sessions if s.node and not s.node.dropped.is_set())
    held = live_held(relay)
    assert held == {name: leased.get(name, 0) for name in held}, (held, leased)
    return held


async def test_slots_are_given_back_once_through_every_path(start: Start) -> None:
    relay = await start(trusted_proxy=("127.0.0.1/32",))
    one = await live_node(relay, "gpu-1", slots=4)
    two = await live_node(relay, "gpu-2", slots=4)
    pages = [await open_page(relay, **{"X-Forwarded-For": f"10.0.0.{i}"}) for i in range(4)]
    for page in pages:
        await page.start()
    leases = {}
    for node in (one, two, one, two):  # the least busy node each time
        opened = await node.expect(LiveOpen)
        leases[opened.lease_id] = node
    assert consistent(relay) == {"gpu-1": 2, "gpu-2": 2}
    # gpu-1 refuses one lease (no other node has a live slot free: it ends) and readies
    # the other; gpu-2 readies both.
    first, second = [lease for lease, node in leases.items() if node is one]
    await one.send(LiveEnd(first, "not today"))
    await one.send(LiveReady(second))
    for lease, node in leases.items():
        if node is two:
            await two.send(LiveReady(lease))
    sessions = relay.client.app[api.SERVICE].live_sessions
    async with asyncio.timeout(5):
        while sessions.sessions > 3:
            await asyncio.sleep(0.02)
    assert consistent(relay) == {"gpu-1": 1, "gpu-2": 2}
    # A third node comes; gpu-2 drains: its sessions move (one to gpu-3, one to gpu-1).
    three = await live_node(relay, "gpu-3", slots=4)
    await two.send(Drain())
    for _ in range(2):
        await two.expect(LiveEnd)
    assert consistent(relay) == {"gpu-1": 2, "gpu-2": 0, "gpu-3": 1}
    # gpu-3 is killed before it answers (its session finds no slot: it ends), then every
    # page hangs up.
    await three.close()
    async with asyncio.timeout(5):
        while "gpu-3" in live_held(relay):
            await asyncio.sleep(0.02)
    assert consistent(relay) == {"gpu-1": 2, "gpu-2": 0}
    for page in pages:
        await page.ws.close()
    async with asyncio.timeout(5):
        while relay.client.app[api.SOCKETS]:
            await asyncio.sleep(0.02)
    assert consistent(relay) == {"gpu-1": 0, "gpu-2": 0}


def raw(body: dict[str, object]) -> bytes:
    data: bytes = msgpack.packb(body)
    return struct.pack(">I", len(data)) + data


async def test_a_node_naming_a_lease_it_was_never_given_is_dropped(start: Start) -> None:
    relay = await start(trusted_proxy=("127.0.0.1/32",))
    good = await live_node(relay, "gpu-1", slots=4)
    page = await open_page(relay)
    await page.start()
    opened = await ready(good, page)
    bad = await live_node(relay, "gpu-2", slots=4)
    victim = await open_page(relay, **{"X-Forwarded-For": "10.1.1.1"})
    await victim.start()
    await ready(bad, victim)  # the least busy node
    # gpu-2 paints for gpu-1's lease (raw bytes: its own Connection would not send it).
    jpeg = frame_jpeg((80, 60))
    body = {"type": "live_painted", "lease_id": opened.lease_id, "seq": 1, "jpeg": jpeg,
            "elapsed": 0.1}  # fmt: skip
    await bad.send_raw(raw(body))
    assert await bad.closed_by_relay()
    # Its own session moves to gpu-1; gpu-1's session never saw the stray frame.
    assert (await victim.until("moved"))["node"] == "gpu-1"
    await ready(good, victim)
    await page.ws.send_bytes(page_frame(1, frame_jpeg()))
    await paint(good, await good.expect(LiveFrame))
    assert (await page.until("painted"))["seq"] == 1 and page.painted == [1]
    assert live_held(relay) == {"gpu-1": 2}


async def test_a_version_2_node_sending_live_messages_is_dropped(start: Start) -> None:
    relay = await start()
    node = await relay.node("v2", versions=(1, 2), live=True, slots=4)
    await node.send_raw(raw({"type": "live_ready", "lease_id": "l1"}))
    assert await node.closed_by_relay()
    page = await open_page(relay)
    await page.start()
    assert (await page.until("ended"))["reason"] == "no_node"
    assert live_held(relay) == {}


# ---- odd frames at a real node's desk (CPU, its real fast engines) --------------------------


def encoded(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


async def test_a_node_paints_odd_frames_or_says_why_not() -> None:
    runner = JobRunner(NodeCaps(1000, 4_000_000), build_registry(None), torch.device("cpu"))
    sent: list[Message] = []
    desk = LiveDesk(runner, sent.append, enabled=True, slots=2)
    kinds = frames_of_every_kind()
    names = ["cmyk jpeg", "grey jpeg", "animated webp", "transparent webp"]
    names += ["progressive jpeg", "cut-off jpeg", "bomb jpeg", "png"]
    frames = {seq: kinds[name] for seq, name in enumerate(names, 1)}
    try:
        desk.handle(LiveOpen("a", 64, LiveStyle("fast", style_id="builtin:ochre-sky")))
        async with asyncio.timeout(30):
            while LiveReady("a") not in sent:
                await asyncio.sleep(0.02)
            for seq, data in frames.items():  # one at a time, as the relay sends them
                desk.handle(LiveFrame("a", seq, data))
                while len([m for m in sent if isinstance(m, LivePainted | LiveMissed)]) < seq:
                    await asyncio.sleep(0.02)
    finally:
        desk.close()
    painted = {m.seq: m for m in sent if isinstance(m, LivePainted)}
    missed = {m.seq: m.message for m in sent if isinstance(m, LiveMissed)}
    assert set(painted) == {1, 2, 3, 4, 5} and set(missed) == {6, 7, 8}
    for message in painted.values():
        with Image.open(io.BytesIO(message.jpeg)) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (64, 48))
    assert "4000x3000" in missed[7]


async def test_a_style_switch_is_not_undone_by_a_slower_earlier_one() -> None:
    runner = JobRunner(NodeCaps(1000, 4_000_000), build_registry(None), torch.device("cpu"))
    sent: list[Message] = []
    desk = LiveDesk(runner, sent.append, enabled=True, slots=2)
    # A big painting takes the node a while to prepare; the fast style a moment.
    slow = LiveStyle(
        "arbitrary", image=encoded(Image.new("RGB", (4096, 4096), (200, 30, 30)), "PNG")
    )
    fast = LiveStyle("fast", style_id="builtin:ochre-sky")
    photo = frame_jpeg((64, 48))

    async def answer(seq: int) -> LivePainted:
        while True:
            for m in sent:
                if isinstance(m, LivePainted | LiveMissed) and m.seq == seq:
                    assert isinstance(m, LivePainted), m
                    return m
            await asyncio.sleep(0.02)

    try:
        async with asyncio.timeout(30):
            desk.handle(LiveOpen("ref", 64, fast))
            desk.handle(LiveOpen("a", 64, slow))
            desk.handle(LiveRestyle("a", fast))  # the page switched at once
            while not {LiveReady("a"), LiveReady("ref")} <= set(sent):
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)  # let any late preparation land
            desk.handle(LiveFrame("ref", 1, photo))
            reference = await answer(1)
            desk.handle(LiveFrame("a", 2, photo))
            painted = await answer(2)
    finally:
        desk.close()
    with Image.open(io.BytesIO(reference.jpeg)) as a, Image.open(io.BytesIO(painted.jpeg)) as b:
        diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
        assert max(diff.tobytes()) < 16  # the fast style's frame, not the painting's


async def test_a_node_paints_no_more_than_a_few_frames_of_one_lease_at_once() -> None:
    runner = JobRunner(NodeCaps(1000, 4_000_000), build_registry(None), torch.device("cpu"))
    sent: list[Message] = []
    desk = LiveDesk(runner, sent.append, enabled=True, slots=2)

    def answers() -> list[LivePainted | LiveMissed]:
        return [m for m in sent if isinstance(m, LivePainted | LiveMissed)]

    try:
        async with asyncio.timeout(30):
            desk.handle(LiveOpen("a", 64, LiveStyle("fast", style_id="builtin:ochre-sky")))
            while LiveReady("a") not in sent:
                await asyncio.sleep(0.02)
            for seq in range(1, 31):  # a faulty relay: the protocol allows two at a time
                desk.handle(LiveFrame("a", seq, frame_jpeg((64, 48))))
            while len(answers()) < 30:
                await asyncio.sleep(0.02)
    finally:
        desk.close()
    assert sorted(m.seq for m in answers()) == list(range(1, 31))  # each answered once
    painted = [m.seq for m in answers() if isinstance(m, LivePainted)]
    assert 2 <= len(painted) <= live_desk.FRAMES_AT_WORK
