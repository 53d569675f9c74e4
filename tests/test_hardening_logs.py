"""What a client does wrong costs the operator one log line a minute, not a traceback each."""

import asyncio
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import make_config

from relay.app import init
from relay.peerlog import QUIET_EVERY, ClientFaults

Client = TestClient[web.Request, web.Application]

SMUGGLED = (
    b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
)


async def _send_raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_malformed_http_is_answered_400_and_logged_once_without_traceback(
    aiohttp_client: AiohttpClient, tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    client: Client = await aiohttp_client(init(make_config(tmp_path)))  # type: ignore[arg-type]
    port = client.server.port
    assert port is not None
    with caplog.at_level(logging.INFO):
        for _ in range(20):
            answer = await _send_raw(port, SMUGGLED)
            assert answer.split(b" ", 2)[1] == b"400"
    server_records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert server_records == []
    quiet = [r for r in caplog.records if r.name == "relay.http"]
    assert len(quiet) == 1
    assert quiet[0].levelno == logging.WARNING and quiet[0].exc_info is None
    assert "BadHttpMessage" in quiet[0].getMessage()
    # The relay is still fine.
    assert (await client.get("/healthz")).status == 200


def test_the_rest_are_counted_into_one_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    quiet = ClientFaults(clock=lambda: now[0])
    logger = logging.getLogger("test.aiohttp.server")
    logger.addFilter(quiet)

    def fault() -> None:
        try:
            raise ConnectionResetError("Connection lost")
        except ConnectionResetError:
            logger.exception("Error handling request")

    with caplog.at_level(logging.INFO):
        for step in range(100):
            now[0] = step * 1.0
            fault()
        logger.error("something the relay did wrong")
    summaries = [r.getMessage() for r in caplog.records if r.name == "relay.http"]
    assert len(summaries) == 2 + (99 // int(QUIET_EVERY)) - 1
    assert "60 ConnectionResetError" in summaries[1]
    # Other errors pass untouched.
    assert [r.getMessage() for r in caplog.records if r.name == logger.name] == [
        "something the relay did wrong"
    ]


async def test_a_client_hanging_up_mid_body_logs_no_error(
    aiohttp_client: AiohttpClient, tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    client: Client = await aiohttp_client(init(make_config(tmp_path)))  # type: ignore[arg-type]
    port = client.server.port
    assert port is not None
    head = (
        b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        b'--b\r\nContent-Disposition: form-data; name="content"; filename="a.png"\r\n\r\n'
    )
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + b"\x89PNG" * 100)
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.2)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert (await client.get("/healthz")).status == 200
