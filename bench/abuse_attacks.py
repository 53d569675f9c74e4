"""The attacks of issue 11 ("Harden the public relay"), each bounded in count and time.

Each attack is an async function of a `Ctx` that runs until `ctx.until` (or its own count
limit) and leaves figures in `ctx.notes`. Web attacks come from 127.2.x.y, the malicious
node from 127.0.0.3; the normal user (bench/abuse.py) uses 127.0.1.x. Nothing leaves
127.0.0.0/8.
"""

import asyncio
import base64
import contextlib
import gzip
import io
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from PIL import Image
from wire_node import WireNode

from protocol import Accept, Bye, Offer, Ping, Pong, Progress, Reject, Result, StyleInfo, Welcome

LOOP = "127.0.0.1"
BAD_NODE = "mallory"
BAD_NODE_ADDRESS = "127.0.0.3"
MIB = 1 << 20


def attacker(i: int) -> str:
    """The i-th attacker address: 127.2.0.1, 127.2.0.2, ... (never a normal user's)."""
    return f"127.2.{i // 250 % 250}.{i % 250 + 1}"


def session_from(address: str) -> aiohttp.ClientSession:
    """An HTTP client whose connections leave from `address` (all of 127/8 is loopback)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0)
    return aiohttp.ClientSession(connector=connector)


def solid_png(size: tuple[int, int]) -> bytes:
    """A one-colour PNG (what the honest node sends back)."""
    out = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(out, format="PNG")
    return out.getvalue()


@cache
def small_png() -> bytes:
    return solid_png((64, 48))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tally(counter: Counter[Any]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(counter.items(), key=str)) or "none"


@dataclass
class Ctx:
    """What an attack gets: where the relay is, its deadline, and where to put its notes."""

    base: str
    node_port: int
    bad_token: str
    data_dir: Path
    until: float
    notes: dict[str, Any]
    defects: list[str] = field(default_factory=list)
    """What the attack itself found wrong beyond the normal user's figures."""

    def left(self) -> float:
        """Seconds until the attack must stop."""
        return self.until - time.monotonic()


@dataclass(frozen=True)
class Attack:
    """One attack: its name, its item in issue 11, what it does, its code, relay settings."""

    name: str
    item: str
    what: str
    run: Callable[[Ctx], Awaitable[None]] | None
    flags: dict[str, str] = field(default_factory=dict)
    smtp: bool = False


async def _status(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> int | str:
    """The status of one request, or the name of the error that stopped it."""
    try:
        async with session.request(method, url, **kwargs) as resp:
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return type(exc).__name__


async def _dial(port: int, address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(LOOP, port, local_addr=(address, 0))


async def _held(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> int:
    """How many of these connections the relay has neither answered nor closed."""

    async def held(reader: asyncio.StreamReader) -> bool:
        try:
            return bool(await asyncio.wait_for(reader.read(1), 0.05) and False)
        except TimeoutError:
            return True
        except OSError:
            return False

    return sum(await asyncio.gather(*(held(r) for r, _ in conns)))


# ---- 1. out-of-range parameters ----------------------------------------------------------


async def params(ctx: Ctx) -> None:
    """A seed of 2^64 (JSON) and style weights of 1e308, one job a second."""
    seen: Counter[int | str] = Counter()
    for i in range(120):
        if ctx.left() <= 0:
            break
        async with session_from(attacker(i)) as session:
            url = ctx.base + "/api/jobs"
            if i % 2 == 0:
                body = {"image": b64(small_png()), "style": "fast:candy", "seed": 2**64}
                seen[await _status(session, "POST", url, json=body)] += 1
            else:
                form = aiohttp.FormData()
                form.add_field("content", small_png(), filename="a.png")
                form.add_field("style", "painting:udnie,painting:the_scream")
                form.add_field("method", "arbitrary")
                form.add_field("style_weights", "1e308,1e308")
                seen[await _status(session, "POST", url, data=form)] += 1
        await asyncio.sleep(min(1.0, max(0.0, ctx.left())))
    ctx.notes["attacker got"] = tally(seen)


# ---- 2. e-mail header injection ----------------------------------------------------------


class Mailbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps the envelopes' recipients."""

    def __init__(self) -> None:
        self.recipients: list[str] = []
        with socket.socket() as sock:
            sock.bind((LOOP, 0))
            port = int(sock.getsockname()[1])
        self.controller = Controller(self, hostname=LOOP, port=port)
        self.controller.start()
        self.port = port
        self._running = True

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.recipients += envelope.rcpt_tos
        return "250 OK"

    def relay_flags(self) -> dict[str, str]:
        """The relay settings that send its e-mail here."""
        return {
            "smtp_host": LOOP,
            "smtp_port": str(self.port),
            "smtp_from": "relay@example.org",
            "public_url": "http://relay.example.org",
            "smtp_starttls": "no",
        }

    def delivered(self, addresses: list[str]) -> int:
        got = set(self.recipients)
        return sum(a in got for a in addresses)

    def stop(self) -> None:
        if self._running:
            self._running = False
            self.controller.stop()


async def mail(ctx: Ctx) -> None:
    """Jobs with an address and a file name carrying CR/LF, two a second."""
    seen: Counter[int | str] = Counter()
    for i in range(60):
        if ctx.left() <= 0:
            break
        form = aiohttp.FormData()
        form.add_field("content", small_png(), filename="a.png")
        form.add_field("style", "fast:candy")
        form.add_field("email", "attacker@example.org")
        form.add_field("filename", "photo\r\nBcc: everyone@example.org\r\n.png")
        async with session_from(attacker(i)) as session:
            seen[await _status(session, "POST", ctx.base + "/api/jobs", data=form)] += 1
        await asyncio.sleep(min(0.5, max(0.0, ctx.left())))
    ctx.notes["attacker got"] = tally(seen)


# ---- 3. bodies ---------------------------------------------------------------------------


@cache
def gzip_bomb() -> bytes:
    """65 KB of gzip that inflate to a 69 MB JSON body."""
    inner = b'{"image": "' + b"A" * 69_000_000 + b'"}'
    return gzip.compress(inner, compresslevel=9)


async def _loop_posts(
    ctx: Ctx, workers: int, rounds: int, send: Callable[[aiohttp.ClientSession], Awaitable[Any]]
) -> Counter[int | str]:
    """`workers` attackers (one address each) posting one after another until the deadline."""
    seen: Counter[int | str] = Counter()

    async def worker(k: int) -> None:
        async with session_from(attacker(k)) as session:
            for _ in range(rounds):
                if ctx.left() <= 0:
                    return
                seen[await send(session)] += 1

    await asyncio.gather(*(worker(k) for k in range(workers)))
    return seen


async def gzip_bodies(ctx: Ctx) -> None:
    """Four attackers posting gzip bodies that inflate 1,000-fold."""
    bomb = gzip_bomb()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    url = ctx.base + "/api/jobs"
    seen = await _loop_posts(
        ctx, 4, 50, lambda s: _status(s, "POST", url, data=bomb, headers=headers)
    )
    ctx.notes["bomb KB"] = len(bomb) // 1024
    ctx.notes["attacker got"] = tally(seen)


@cache
def webp_bomb() -> bytes:
    """A lossless WebP of 6000x4000 (24 MP, at the pixel cap) in under 1 KB."""
    out = io.BytesIO()
    Image.new("RGB", (6000, 4000)).save(out, format="WEBP", lossless=True)
    return out.getvalue()


async def webp(ctx: Ctx) -> None:
    """Eight attackers posting a tiny WebP that takes a second or more to decode."""
    bomb = webp_bomb()
    url = ctx.base + "/api/jobs"

    def send(session: aiohttp.ClientSession) -> Awaitable[int | str]:
        form = aiohttp.FormData()
        form.add_field("content", bomb, filename="a.webp", content_type="image/webp")
        form.add_field("style", "fast:candy")
        return _status(session, "POST", url, data=form)

    seen = await _loop_posts(ctx, 8, 30, send)
    ctx.notes["bomb bytes"] = len(bomb)
    ctx.notes["attacker got"] = tally(seen)


def _head(port: int, length: int, media: str) -> bytes:
    return (
        f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {media}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _port(ctx: Ctx) -> int:
    return int(ctx.base.rsplit(":", 1)[1])


async def _hold(
    ctx: Ctx, count: int, opener: Callable[[int], Awaitable[Any]], parallel: int = 50
) -> list[Any]:
    """Open `count` connections (`parallel` at a time) before the deadline."""
    gate = asyncio.Semaphore(parallel)
    held: list[Any] = []

    async def one(k: int) -> None:
        async with gate:
            if ctx.left() <= 0:
                return
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(max(0.1, ctx.left())):
                    held.append(await opener(k))

    await asyncio.gather(*(one(k) for k in range(count)))
    return held


async def slow_bodies(ctx: Ctx) -> None:
    """200 uploads (10 per address) that send their body one byte every 10 s."""
    port = _port(ctx)
    media = "multipart/form-data; boundary=b"

    async def opener(k: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await _dial(port, attacker(k // 10))
        writer.write(_head(port, 100_000, media) + b"-")
        await writer.drain()
        return reader, writer

    conns = await _hold(ctx, 200, opener)
    while ctx.left() > 0:
        await asyncio.sleep(min(10.0, ctx.left()))
        for _, writer in conns:
            with contextlib.suppress(OSError):
                writer.write(b"-")
    ctx.notes["opened"] = len(conns)
    ctx.notes["still held by relay"] = await _held(conns)
    for _, writer in conns:
        writer.close()


async def unfinished_bodies(ctx: Ctx) -> None:
    """Ten JSON uploads from ten addresses that send 49.5 MB of a 66 MB body, then stall."""
    port = _port(ctx)
    chunk = b'{"image": "' + b"A" * (MIB - 11)

    async def opener(k: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await _dial(port, attacker(k))
        writer.write(_head(port, 66_000_000, "application/json"))
        sent = 0
        while sent < 49_500_000:
            piece = chunk[: min(len(chunk), 49_500_000 - sent)]
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
        return reader, writer

    conns = await _hold(ctx, 10, opener, parallel=10)
    ctx.notes["bodies held"] = len(conns)
    await asyncio.sleep(max(0.0, ctx.left()))
    ctx.notes["still held by relay"] = await _held(conns)
    for _, writer in conns:
        writer.close()


@cache
def big_json() -> bytes:
    """A 66.7 MB JSON body: just under the relay's whole-body cap today."""
    return b'{"image": "' + b"A" * (66_700_000 - 13) + b'"}'


async def big_json_bodies(ctx: Ctx) -> None:
    """Ten attackers posting 66.7 MB JSON bodies, again and again."""
    body = big_json()
    headers = {"Content-Type": "application/json"}
    url = ctx.base + "/api/jobs"
    seen = await _loop_posts(
        ctx, 10, 20, lambda s: _status(s, "POST", url, data=body, headers=headers)
    )
    ctx.notes["attacker got"] = tally(seen)


# ---- 4. disk fill ------------------------------------------------------------------------


def _noise_jpeg() -> bytes:
    img = Image.frombytes("RGB", (2048, 2048), os.urandom(2048 * 2048 * 3))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()


async def disk(ctx: Ctx, cap_mb: float = 2000.0) -> None:
    """Five 2048² noise JPEGs per job at size 2048, then cancel; again, from 50 addresses."""
    seen: Counter[int | str] = Counter()
    sent_mb = 0.0
    for i in range(40):
        if ctx.left() <= 0:
            break
        images = await asyncio.gather(*(asyncio.to_thread(_noise_jpeg) for _ in range(5)))
        form = aiohttp.FormData()
        form.add_field("content", images[0], filename="a.jpg", content_type="image/jpeg")
        for data in images[1:]:
            form.add_field("style_image", data, filename="s.jpg", content_type="image/jpeg")
        form.add_field("method", "gatys")
        form.add_field("size", "2048")
        async with session_from(attacker(i % 50)) as session:
            try:
                async with session.post(ctx.base + "/api/jobs", data=form) as resp:
                    body = await resp.json(content_type=None)
                    seen[resp.status] += 1
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                seen[type(exc).__name__] += 1
                continue
            sent_mb += sum(map(len, images)) / MIB
            if "id" in body:
                seen[await _status(session, "DELETE", f"{ctx.base}/api/jobs/{body['id']}")] += 1
        if sum(p.stat().st_size for p in ctx.data_dir.rglob("*") if p.is_file()) > cap_mb * MIB:
            ctx.notes["stopped at cap MB"] = cap_mb
            break
    ctx.notes["uploaded MB"] = round(sent_mb)
    ctx.notes["attacker got"] = tally(seen)


# ---- 6. queue flood ----------------------------------------------------------------------


async def queue_flood(ctx: Ctx) -> None:
    """256 addresses x 3 jobs for gatys, which no node offers."""
    seen: Counter[int | str] = Counter()
    gate = asyncio.Semaphore(16)

    async def one(k: int) -> None:
        async with gate, session_from(attacker(k)) as session:
            for _ in range(3):
                if ctx.left() <= 0:
                    return
                form = aiohttp.FormData()
                form.add_field("content", small_png(), filename="a.png")
                form.add_field("style", "painting:udnie")
                form.add_field("method", "gatys")
                seen[await _status(session, "POST", ctx.base + "/api/jobs", data=form)] += 1

    await asyncio.gather(*(one(k) for k in range(256)))
    async with aiohttp.ClientSession() as session, session.get(ctx.base + "/healthz") as resp:
        ctx.notes["queued at end"] = (await resp.json())["queued"]
    ctx.notes["attacker got"] = tally(seen)


# ---- 7. unfinished frames on the node port -----------------------------------------------


async def node_frames(ctx: Ctx) -> None:
    """1,000 connections to the node port (from 100 addresses), each 1 byte short of a
    whole 1 MiB frame before any Hello."""
    frame = struct.pack(">I", MIB) + b"\x00" * (MIB - 1)

    async def opener(k: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await _dial(ctx.node_port, attacker(k // 10))
        writer.write(frame)
        await writer.drain()
        return reader, writer

    conns = await _hold(ctx, 1000, opener)
    ctx.notes["frames sent"] = len(conns)
    await asyncio.sleep(max(0.0, ctx.left()))
    ctx.notes["still held by relay"] = await _held(conns)
    for _, writer in conns:
        writer.close()


# ---- 8. a malicious node -----------------------------------------------------------------


async def _mallory(
    ctx: Ctx, on_offer: Callable[[WireNode, Offer], Awaitable[None]], **caps: Any
) -> None:
    """Connect as the token-holding node `mallory` and hand every offer to `on_offer`."""
    reader, writer = await _dial(ctx.node_port, BAD_NODE_ADDRESS)
    node = WireNode(reader, writer)
    try:
        await node.hello(ctx.bad_token, BAD_NODE, **caps)
        while ctx.left() > 0:
            try:
                async with asyncio.timeout(ctx.left()):
                    data = await reader.read(256 * 1024)
            except TimeoutError:
                return
            if not data:
                ctx.notes["mallory dropped"] = True
                return
            for message in node.conn.receive_data(data):
                match message:
                    case Offer():
                        await on_offer(node, message)
                    case Ping(nonce=nonce):
                        await node.send(Pong(nonce))
                    case Bye() | Reject():
                        ctx.notes["mallory dropped"] = True
                        return
    finally:
        await node.close()


_FAST = {"methods": ("fast", "arbitrary"), "styles": (StyleInfo("candy", "Candy", "fast", None),)}


async def node_slots(ctx: Ctx) -> None:
    """A node that advertises 256 slots, accepts every offer and never answers."""
    taken = 0

    async def sit(node: WireNode, offer: Offer) -> None:
        nonlocal taken
        taken += 1
        await node.send(Accept(offer.job_id, offer.lease_id))

    await _mallory(ctx, sit, slots=256, max_pixels=2048 * 2048, **_FAST)
    ctx.notes["offers sat on"] = taken


async def node_results(ctx: Ctx) -> None:
    """A node (8 slots) answering at once: a PNG with HTML appended, or a 6000x4000 PNG."""
    huge = solid_png((6000, 4000))
    counts: Counter[str] = Counter()

    async def answer(node: WireNode, offer: Offer) -> None:
        with Image.open(io.BytesIO(offer.content)) as img:
            size = img.size
        if sum(counts.values()) % 2 == 0:
            png = solid_png(size) + b"<html><script>alert(document.cookie)</script></html>"
            counts["HTML appended"] += 1
        else:
            png, size = huge, (6000, 4000)
            counts["6000x4000"] += 1
        out = node.conn.send(Accept(offer.job_id, offer.lease_id))
        await node.send_raw(
            out + node.conn.send(Result.for_png(offer.job_id, offer.lease_id, png, *size))
        )

    await _mallory(ctx, answer, slots=8, max_pixels=2048 * 2048, **_FAST)
    ctx.notes["bad results sent"] = tally(counts)


async def node_progress(ctx: Ctx) -> None:
    """A gatys node that floods Progress for the attacker's own gatys jobs."""
    sent = 0
    start = time.monotonic()
    flooding: list[asyncio.Task[None]] = []

    async def flood(node: WireNode, offer: Offer) -> None:
        nonlocal sent
        epochs = int(offer.params.get("epochs", 200))
        progress = Progress(offer.job_id, offer.lease_id, 1, epochs, {"style": 1.0}, 0.5)
        batch = b"".join(node.conn.send(progress) for _ in range(500))
        while ctx.left() > 0 and not node.writer.is_closing():
            node.writer.write(batch)
            await node.writer.drain()
            sent += 500

    async def take(node: WireNode, offer: Offer) -> None:
        await node.send(Accept(offer.job_id, offer.lease_id))
        flooding.append(asyncio.create_task(flood(node, offer)))

    async def post_jobs() -> None:
        await asyncio.sleep(0.3)
        async with session_from(attacker(0)) as session:
            for _ in range(2):
                form = aiohttp.FormData()
                form.add_field("content", small_png(), filename="a.png")
                form.add_field("style", "painting:udnie")
                form.add_field("method", "gatys")
                await _status(session, "POST", ctx.base + "/api/jobs", data=form)

    poster = asyncio.create_task(post_jobs())
    try:
        await _mallory(ctx, take, slots=1, methods=("gatys",), styles=())
    finally:
        for task in [poster, *flooding]:
            task.cancel()
        await asyncio.gather(poster, *flooding, return_exceptions=True)
    ctx.notes["progress msgs/s"] = round(sent / max(1e-9, time.monotonic() - start))


async def node_styles(ctx: Ctx) -> None:
    """A node that reconnects again and again, each time with 256 new fast styles."""
    thumb = b"\xff\xd8\xff\xe0" + os.urandom(3000)
    rounds = 0
    for rounds in range(1, 2001):
        if ctx.left() <= 0:
            break
        styles = tuple(
            StyleInfo(f"s{rounds}-{j}", f"Style {rounds}-{j}", "fast", thumb) for j in range(256)
        )
        reader, writer = await _dial(ctx.node_port, BAD_NODE_ADDRESS)
        node = WireNode(reader, writer)
        try:
            await node.hello(ctx.bad_token, BAD_NODE, styles=styles, methods=("fast",))
            with contextlib.suppress(TimeoutError, ConnectionError, AssertionError):
                await node.expect(Welcome, timeout=max(0.1, ctx.left()))
        finally:
            await node.close()
    ctx.notes["reconnects"] = rounds
    async with aiohttp.ClientSession() as session, session.get(ctx.base + "/api/styles") as resp:
        listed = (await resp.json())["styles"]
    ctx.notes["fast styles listed"] = sum(s["kind"] == "fast" for s in listed)
    # A style only a departed node served: is it still taken as known?
    body = {"image": b64(small_png()), "style": "fast:s1-0"}
    async with session_from(attacker(1)) as session:
        status = await _status(session, "POST", ctx.base + "/api/jobs", json=body)
    ctx.notes["job for a departed node's style"] = status
    if status == 202:
        ctx.defects.append("a style no connected node serves was accepted")


# ---- 10. malformed requests --------------------------------------------------------------


def _raw_json(text: str) -> dict[str, Any]:
    return {"data": text.encode(), "headers": {"Content-Type": "application/json"}}


def _json(**fields: Any) -> dict[str, Any]:
    return {"json": {"image": b64(small_png()), "style": "fast:candy", **fields}}


def _multipart(body: bytes, boundary: str | None = "b") -> dict[str, Any]:
    media = "multipart/form-data" + (f"; boundary={boundary}" if boundary is not None else "")
    return {"data": body, "headers": {"Content-Type": media}}


def _png_header(width: int, height: int) -> bytes:
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def _image_case(data: bytes) -> dict[str, Any]:
    return {"json": {"image": b64(data), "style": "fast:candy"}}


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("P", (32, 32)).save(out, format="GIF")
    return out.getvalue()


def malformed_cases() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(name, method, path, request kwargs) of requests a sloppy or hostile client sends."""
    jobs = "/api/jobs"
    part = b'--b\r\nContent-Disposition: form-data; name="content"\r\n\r\nxx\r\n--b--\r\n'
    return [
        ("multipart without boundary", "POST", jobs, _multipart(b"x", None)),
        ("multipart empty boundary", "POST", jobs, _multipart(part, "")),
        ("multipart garbage", "POST", jobs, _multipart(b"--b\r\nfoo\r\n--b--")),
        ("multipart unclosed", "POST", jobs, _multipart(part[:-8])),
        ("multipart odd charset", "POST", jobs, _multipart(part.replace(b"xx", b"\xff\xfe"))),
        ("json deep nesting", "POST", jobs, _raw_json("[" * 100_000 + "]" * 100_000)),
        (
            "json not utf-8",
            "POST",
            jobs,
            {"data": b'{"a": "\xff"}', "headers": {"Content-Type": "application/json"}},
        ),
        ("json null", "POST", jobs, _raw_json("null")),
        ("json huge exponent", "POST", jobs, _raw_json('{"image": "x", "size": 1e400}')),
        ("json style list of lists", "POST", jobs, _json(style=[[1]])),
        ("json style id not text", "POST", jobs, _json(style={"id": 5})),
        ("json weights of dicts", "POST", jobs, _json(style_weights=[{}])),
        ("json weights not a list", "POST", jobs, _json(style_weights="1,2")),
        (
            "json weight infinite",
            "POST",
            jobs,
            _raw_json('{"image": "eA==", "style": [{"id": "painting:udnie", "weight": 1e999}]}'),
        ),
        ("json email list", "POST", jobs, _json(email=["a@b.c"])),
        ("json filename object", "POST", jobs, _json(filename={"a": 1})),
        ("json method number", "POST", jobs, _json(method=5)),
        ("json bool as list", "POST", jobs, _json(keep_colors=[])),
        ("json seed hex", "POST", jobs, _json(seed="0x10")),
        ("json image number", "POST", jobs, {"json": {"image": 5, "style": "fast:candy"}}),
        (
            "json image lone surrogate",
            "POST",
            jobs,
            _raw_json('{"image": "\\ud800", "style": "fast:candy"}'),
        ),
        (
            "json style_image weight text",
            "POST",
            jobs,
            {
                "json": {
                    "image": b64(small_png()),
                    "style_image": [{"image": b64(small_png()), "weight": "x"}],
                    "method": "arbitrary",
                }
            },
        ),
        ("image cut short", "POST", jobs, _image_case(small_png()[:60])),
        ("image empty", "POST", jobs, _image_case(b"")),
        ("image PNG header only", "POST", jobs, _image_case(_png_header(64, 48))),
        ("image bomb header", "POST", jobs, _image_case(_png_header(100_000, 100_000))),
        ("image zero-size header", "POST", jobs, _image_case(_png_header(0, 0))),
        ("image GIF", "POST", jobs, _image_case(_gif())),
        ("image thin", "POST", jobs, _image_case(solid_png((4000, 16)))),
        ("content-type missing", "POST", jobs, {"data": b"x", "headers": {"Content-Type": ""}}),
        (
            "chunked garbage",
            "POST",
            jobs,
            {
                "data": b"zz\r\nx\r\n",
                "headers": {"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
            },
        ),
        ("job id odd", "GET", "/api/jobs/%ff%fe%00", {}),
        ("job id long", "GET", "/api/jobs/" + "a" * 5000, {}),
        ("style index huge", "GET", "/api/jobs/abc/style/99999999999999999999999", {}),
        ("style thumbnail odd", "GET", "/api/styles/%00/thumbnail", {}),
        ("events without upgrade", "GET", "/api/jobs/abc/events", {}),
        ("delete unknown", "DELETE", "/api/jobs/abc", {}),
        ("page traversal", "GET", "/..%2f..%2fetc/passwd", {}),
        ("forwarded garbage", "GET", "/api/styles", {"headers": {"X-Forwarded-For": "::::, <x>"}}),
    ]


async def malformed(ctx: Ctx) -> None:
    """Each malformed request in turn, from a new address each time, until the deadline."""
    cases = malformed_cases()
    seen: Counter[int | str] = Counter()
    crashed: set[str] = set()
    sessions = [session_from(attacker(k)) for k in range(200)]
    try:
        for i in range(2000):
            if ctx.left() <= 0:
                break
            name, method, path, kwargs = cases[i % len(cases)]
            session = sessions[i % len(sessions)]
            async with asyncio.timeout(max(0.1, ctx.left()) + 2):
                status = await _status(session, method, ctx.base + path, **kwargs)
            seen[status] += 1
            if status == 500:
                crashed.add(name)
    finally:
        for session in sessions:
            await session.close()
    ctx.notes["statuses"] = tally(seen)
    ctx.notes["500 on"] = ", ".join(sorted(crashed)) or "none"
    if crashed:
        ctx.defects.append(f"{len(crashed)} kinds of malformed request got a 500")


ATTACKS = [
    Attack("params", "1", "seed 2^64 (JSON) and style weights 1e308: the Offer fails", params),
    Attack("mail", "2", "e-mail and a file name with CR/LF", mail, smtp=True),
    Attack("gzip", "3", "gzip bodies, 65 KB -> 69 MB", gzip_bodies),
    Attack("webp", "3", "978-byte lossless WebP of 6000x4000", webp),
    Attack("slow-body", "3", "200 bodies at 1 byte / 10 s", slow_bodies),
    Attack("unfinished", "3", "ten unfinished 49.5 MB bodies", unfinished_bodies),
    Attack("big-json", "3", "ten 66.7 MB JSON bodies at a time", big_json_bodies),
    Attack("disk", "4", "five 2048² noise JPEGs per job, cancel, repeat", disk),
    Attack("queue-flood", "6", "256 addresses x 3 jobs for a method no node offers", queue_flood),
    Attack("node-frames", "7", "1,000 node connections each holding a 1 MiB frame", node_frames),
    Attack("node-slots", "8", "a node advertising 256 slots that never answers", node_slots),
    Attack("node-results", "8", "a node sending HTML-appended or 6000x4000 results", node_results),
    Attack("node-progress", "8", "a node flooding Progress", node_progress),
    Attack("node-styles", "8", "a node reconnecting with 256 new styles each time", node_styles),
    Attack("malformed", "10", "malformed requests of every kind", malformed),
]
