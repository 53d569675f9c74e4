"""A JSON body costs more than its bytes while it is parsed (its text, the strings parsed
from it, the images decoded from those): the body budget counts that cost from the first
byte, so a big JSON body that would not fit with it is refused before it is read, and
parsing never holds more than was counted.
"""

import base64
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, form, make_config, png
from test_hardening_http import Raw, chunk, settle

from relay.app import init
from relay.config import Config
from relay.intake import INTAKE, MB
from relay.orders import JSON_COST, MAX_STYLES, parse_json

Client = TestClient[web.Request, web.Application]
PROXY = ("127.0.0.1/32",)
PAINTING = "painting:starry_night"


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path) -> Client:
    clock = FakeClock()
    config = make_config(tmp_path, trusted_proxy=PROXY, body_buffer_total_mb=2.0, body_timeout=20)
    return await aiohttp_client(init(config, clock, clock))


def held(client: Client, client_ip: str) -> int:
    return client.app[INTAKE].budget.held(client_ip)


async def test_a_json_body_is_counted_with_its_parse_cost_while_it_arrives(
    client: Client,
) -> None:
    # 600 KB of an unfinished JSON body holds 1.2 MB of the relay's 2 MB.
    first = await Raw.post(
        client,
        {
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
            "X-Forwarded-For": "10.0.0.1",
        },
        chunk(b'{"image": "' + b"A" * (600_000 - 11)),
    )
    await settle(lambda: held(client, "10.0.0.1") >= JSON_COST * 600_000)
    assert held(client, "10.0.0.1") >= JSON_COST * 600_000
    # Another 600 KB JSON body would fit as bytes (1.2 MB of 2) but not with what parsing
    # it holds: refused before it is read, with Retry-After.
    body = json.dumps({"image": "A" * 600_000, "style": PAINTING}).encode()
    second = await Raw.post(
        client,
        {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "X-Forwarded-For": "10.0.0.2",
        },
        body[:1000],
    )
    status, data = await second.answer()
    assert status == 503, data[:300]
    assert b"Retry-After: 5" in data
    # A normal user's small job is still served meanwhile, as multipart and as JSON.
    resp = await client.post(
        "/api/jobs", data=form(style=PAINTING), headers={"X-Forwarded-For": "10.0.0.3"}
    )
    assert resp.status == 202, await resp.text()
    small = {"image": base64.b64encode(png()).decode(), "style": PAINTING}
    resp = await client.post("/api/jobs", json=small, headers={"X-Forwarded-For": "10.0.0.4"})
    assert resp.status == 202, await resp.text()
    for conn in (first, second):
        conn.close()
    await settle(lambda: client.app[INTAKE].budget.held_total == 0)
    assert client.app[INTAKE].budget.held_total == 0


def _big_image_base64(n: int) -> str:
    return base64.b64encode(bytes(range(256)) * (n // 256)).decode()


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="ascii"),
        # One character beyond Latin-1 would make a naive text two or four bytes a character.
        pytest.param({"filename": "写真 😀.jpg"}, id="wide-characters"),
        pytest.param({"filename": "x.jpg", "style_weights": [1, 1, 1, 1]}, id="styles"),
    ],
)
def test_parsing_a_json_body_holds_no_more_than_it_was_counted_for(
    extra: dict[str, Any],
) -> None:
    image = "data:image/png;base64," + _big_image_base64(3 * MB)
    styles = [image] * (MAX_STYLES if "style_weights" in extra else 0)
    body = {"image": image, "style_image": styles, **extra}
    encoded = json.dumps(body, ensure_ascii=False).encode()
    size = len(encoded)
    del image, styles, body
    tracemalloc.start()
    try:
        data = bytearray(encoded)  # the body as the relay holds it, traced from here
        del encoded
        tracemalloc.reset_peak()
        raw = parse_json(data, 64 * MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raw.content is not None and len(raw.content) == 3 * MB
    assert len(raw.style_images) == len(extra.get("style_weights", []))
    assert raw.fields.get("filename") == extra.get("filename")
    # The body, and all that parsing made of it, never held more than was counted for it.
    assert peak <= JSON_COST * size + 64 * 1024, (peak / size, size)


def test_a_json_body_with_much_non_ascii_text_is_refused() -> None:
    data = bytearray(json.dumps({"filename": "é" * 20_000}, ensure_ascii=False).encode())
    with pytest.raises(Exception, match="non-ASCII"):
        parse_json(data, MB)


def test_one_largest_json_job_fits_in_one_clients_default_budget() -> None:
    config = Config()
    # The photo and four style images, each at the cap, as base64, and a little for fields.
    largest = config.max_upload_bytes * (MAX_STYLES + 1) * 4 // 3 + MB
    assert JSON_COST * largest <= config.body_buffer_client_mb * MB
    assert JSON_COST * largest <= config.body_buffer_total_mb * MB
