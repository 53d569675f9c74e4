"""Hardening of the public HTTP side (issue 11): compressed, slow, piled-up and oversized
bodies, uploads per client, cross-site requests and the headers every response carries.

Raw sockets send what a browser or aiohttp's client would not: a body cut short, a body in
pieces, a gzip bomb. Clients are told apart by X-Forwarded-For from a trusted proxy
(127.0.0.1), the way a relay behind nginx sees them.
"""

import asyncio
import gzip
import io
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSServerHandshakeError, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, form, make_config

from relay.app import init
from relay.intake import INTAKE, Intake

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]
MB = 1024 * 1024
PROXY = ("127.0.0.1/32",)


@pytest.fixture
def start(aiohttp_client: AiohttpClient, tmp_path: Path) -> Start:
    clock = FakeClock()

    async def go(**changes: Any) -> Client:
        return await aiohttp_client(init(make_config(tmp_path, **changes), clock, clock))

    return go


# ---- raw connections ---------------------------------------------------------------------


class Raw:
    """One HTTP/1.1 connection written by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def post(
        cls,
        client: Client,
        headers: dict[str, str],
        body: bytes = b"",
        path: str = "/api/jobs",
    ) -> "Raw":
        """Open a connection and send a POST's head and the first `body` bytes."""
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{client.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, within: float = 10.0) -> tuple[int, bytes]:
        """Status and everything until the relay closes the connection (fails if it doesn't)."""
        data = await asyncio.wait_for(self.reader.read(), within)
        status = int(data.split(b" ", 2)[1]) if data else 0
        return status, data

    def close(self) -> None:
        self.writer.close()


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def multipart_head(client_ip: str, length: int) -> dict[str, str]:
    return {
        "Content-Type": "multipart/form-data; boundary=XyZ",
        "Content-Length": str(length),
        "X-Forwarded-For": client_ip,
    }


MULTIPART_START = b'--XyZ\r\nContent-Disposition: form-data; name="content"\r\n\r\n'


async def settle(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Wait until `condition` holds (or give up quietly; the assertions that follow tell)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        if condition():
            return
        await asyncio.sleep(0.01)


def intake_of(client: Client) -> Intake:
    return client.app[INTAKE]


async def small_job(client: Client, client_ip: str, **headers: str) -> int:
    resp = await client.post(
        "/api/jobs",
        data=form(style="painting:starry_night"),
        headers={"X-Forwarded-For": client_ip, **headers},
    )
    await resp.read()
    return resp.status


# ---- bodies ------------------------------------------------------------------------------


async def test_gzip_body_is_refused_unread_and_the_relay_stays_responsive(start: Start) -> None:
    client = await start()
    bomb = gzip.compress(b"{" + b" " * (69 * MB) + b"}", 9)
    assert len(bomb) < 100 * 1024
    headers = {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Content-Length": str(len(bomb)),
    }
    conn = await Raw.post(client, headers, bomb)
    health = await client.get("/healthz")
    assert health.status == 200
    status, data = await conn.answer()
    conn.close()
    assert status == 415, data[:300]
    assert b"Content-Encoding: gzip" in data and b'"error"' in data
    # Nothing of it was ever counted as received: it was never read.
    assert intake_of(client).budget.held_total == 0


async def test_a_third_upload_from_one_client_is_refused_while_others_are_served(
    start: Start,
) -> None:
    client = await start(trusted_proxy=PROXY, uploads_per_client=2)
    slow = [
        await Raw.post(client, multipart_head("10.0.0.1", 100_000), MULTIPART_START + b"x" * 100)
        for _ in range(2)
    ]
    await settle(lambda: intake_of(client).uploads("10.0.0.1") == 2)
    resp = await client.post(
        "/api/jobs",
        data=form(style="painting:starry_night"),
        headers={"X-Forwarded-For": "10.0.0.1"},
    )
    body = await resp.json()
    assert resp.status == 429, body
    assert "2 uploads being received or processed" in body["error"]
    assert await small_job(client, "10.0.0.2") == 202
    for conn in slow:
        conn.close()
    await settle(lambda: intake_of(client).uploads("10.0.0.1") == 0)
    assert intake_of(client).uploads("10.0.0.1") == 0
    assert await small_job(client, "10.0.0.1") == 202


@pytest.mark.parametrize("kind", ["multipart", "chunked json"])
async def test_a_body_that_stalls_is_cut_off_at_body_timeout(start: Start, kind: str) -> None:
    client = await start(body_timeout=1.0)
    if kind == "multipart":
        conn = await Raw.post(client, multipart_head("127.0.0.1", 5000), MULTIPART_START + b"ab")
    else:
        headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        conn = await Raw.post(client, headers, chunk(b'{"image": "iVBO'))
    status, data = await conn.answer(within=10.0)
    conn.close()
    assert status == 408, data[:300]
    assert b"did not arrive within 1 seconds" in data
    await settle(lambda: intake_of(client).budget.held_total == 0)
    assert intake_of(client).budget.held_total == 0


async def test_unfinished_bodies_are_bounded_per_client_and_in_total(start: Start) -> None:
    client = await start(
        trusted_proxy=PROXY, body_buffer_client_mb=1.0, body_buffer_total_mb=2.0, body_timeout=20
    )

    async def unfinished(client_ip: str, size: int) -> Raw:
        headers = {
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
            "X-Forwarded-For": client_ip,
        }
        return await Raw.post(client, headers, chunk(b'{"image": "' + b"A" * size))

    def held(client_ip: str) -> int:
        return intake_of(client).budget.held(client_ip)

    # A JSON body counts twice its bytes (what parsing it will hold: see
    # test_hardening_json_budget.py), so 300 KB of it hold 600 KB.
    first = await unfinished("10.0.0.1", 300_000)
    await settle(lambda: held("10.0.0.1") >= 600_000)
    assert held("10.0.0.1") >= 600_000
    # The same client's second body crosses its 1 MB: refused, the rest never read.
    second = await unfinished("10.0.0.1", 300_000)
    status, data = await second.answer()
    assert status == 429, data[:300]
    assert b"one client may send at once" in data and b"Retry-After" in data
    # A declared length that cannot fit is refused before any of it is read.
    declared = await Raw.post(
        client,
        {"Content-Type": "application/json", "Content-Length": str(2 * MB)},
        b'{"image": "',
    )
    status, _ = await declared.answer()
    assert status == 429
    # Other clients: up to the relay's 2 MB in all, then 503 with Retry-After.
    third = await unfinished("10.0.0.2", 350_000)
    await settle(lambda: held("10.0.0.2") >= 700_000)
    fourth = await unfinished("10.0.0.3", 400_000)
    status, data = await fourth.answer()
    assert status == 503, data[:300]
    assert b"Retry-After: 5" in data
    # A small complete upload still fits and is served.
    assert await small_job(client, "10.0.0.4") == 202
    for conn in (first, second, declared, third, fourth):
        conn.close()
    await settle(lambda: intake_of(client).budget.held_total == 0)
    assert intake_of(client).budget.held_total == 0


async def test_json_with_millions_of_items_is_refused_without_stalling_the_relay(
    start: Start,
) -> None:
    client = await start(max_upload_mb=5.0)
    body = b'{"style": [' + b"0," * 8_000_000 + b"0]}"
    lags: list[float] = []

    async def watchdog() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before)

    dog = asyncio.create_task(watchdog())
    try:
        resp = await client.post(
            "/api/jobs", data=io.BytesIO(body), headers={"Content-Type": "application/json"}
        )
        answer = await resp.json()
    finally:
        dog.cancel()
    assert resp.status == 400, answer
    assert "8,000,002 commas, brackets and braces" in answer["error"]
    # Parsing 8 million items holds the GIL for seconds; a loop that waits 10 ms never
    # waited more than a generous half second.
    assert max(lags) < 0.5, max(lags)


# ---- cross-site --------------------------------------------------------------------------


async def test_cross_origin_posts_deletes_and_sockets_are_refused(start: Start) -> None:
    client = await start()
    evil = {"Origin": "https://evil.example"}
    resp = await client.post("/api/jobs", data=form(style="painting:starry_night"), headers=evil)
    body = await resp.json()
    assert resp.status == 403, body
    assert "evil.example" in body["error"]
    created = await client.post("/api/jobs", data=form(style="painting:starry_night"))
    job = (await created.json())["id"]
    resp = await client.delete(f"/api/jobs/{job}", headers=evil)
    assert resp.status == 403
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect(f"/api/jobs/{job}/events", headers=evil)
    assert refused.value.status == 403
    # Reading is fine from anywhere.
    assert (await client.get(f"/api/jobs/{job}", headers=evil)).status == 200
    # The relay's own page, and no Origin at all (curl, scripts), may.
    own = {"Origin": f"http://127.0.0.1:{client.port}"}
    ws = await client.ws_connect(f"/api/jobs/{job}/events", headers=own)
    assert (await ws.receive_json())["type"] == "state"
    await ws.close()
    assert (await client.delete(f"/api/jobs/{job}", headers=own)).status == 200


async def test_allowed_public_and_proxied_origins_are_accepted(start: Start) -> None:
    client = await start(
        allowed_origins=("https://app.example.org",),
        public_url="https://relay.example.org",
        trusted_proxy=PROXY,
    )
    for origin in (
        "https://app.example.org",
        "https://relay.example.org",
        "HTTPS://App.Example.Org:443",
    ):
        assert await small_job(client, "10.0.0.1", Origin=origin) == 202, origin
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "styles.example.net"}
    assert (
        await small_job(client, "10.0.0.1", Origin="https://styles.example.net", **proxied) == 202
    )
    # Same origin on another scheme or port is another origin.
    assert await small_job(client, "10.0.0.1", Origin="http://app.example.org") == 403
    assert await small_job(client, "10.0.0.1", Origin="null") == 403


async def test_forwarded_host_is_believed_only_from_a_trusted_proxy(start: Start) -> None:
    client = await start()
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "styles.example.net"}
    status = await small_job(client, "10.0.0.1", Origin="https://styles.example.net", **proxied)
    assert status == 403


async def test_every_response_carries_the_security_headers(start: Start) -> None:
    client = await start()
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    policy = page.headers["Content-Security-Policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "img-src 'self' blob: data:",
        f"ws://127.0.0.1:{client.port}",
        "form-action 'self'",
    ):
        assert directive in policy, (directive, policy)
    assert "unsafe-inline" not in policy
    assert page.headers["X-Frame-Options"] == "DENY"
    styles = await (await client.get("/api/styles")).json()
    for path in ("/", "/api/styles", styles["styles"][0]["thumbnail_url"], "/js/main.js", "/nope"):
        resp = await client.get(path)
        await resp.read()
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        assert resp.headers["Referrer-Policy"] == "no-referrer", path
    assert "Content-Security-Policy" not in (await client.get("/api/styles")).headers
