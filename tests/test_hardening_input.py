"""Hardening the relay's input (issue 11): every value it admits can be sent to a node, every
malformed request gets a 4xx with a JSON error, 16-bit PNGs keep their tones, and a failed
job's attempts agree with its error."""

import base64
import io
import json
import struct
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from PIL import Image
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, json_order, make_config, png

from protocol import MAX_UINT, is_param, is_weight
from relay.api import SERVICE
from relay.app import init
from relay.nodewire import wire_offer
from relay.reports import NodeReports
from relay.uploads import prepare

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]
JSON = {"Content-Type": "application/json"}
PAINTING = "painting:starry_night"
TWO = f"{PAINTING},painting:udnie"
# Long enough to show an error that echoes a value whole.
LONGEST_ERROR = 400


@pytest.fixture
def start(aiohttp_client: AiohttpClient, tmp_path: Path) -> Start:
    clock = FakeClock()

    async def go(**changes: Any) -> Client:
        return await aiohttp_client(init(make_config(tmp_path, **changes), clock, clock))

    return go


async def refused(resp: Any) -> str:
    """The error message of a 4xx JSON answer."""
    text = await resp.text()
    assert 400 <= resp.status < 500, (resp.status, text[:300])
    assert resp.content_type == "application/json", text[:300]
    body = json.loads(text)
    assert set(body) == {"error"} and isinstance(body["error"], str)
    message: str = body["error"]
    assert len(message) < LONGEST_ERROR, message[:LONGEST_ERROR]
    return message


async def still_serves(client: Client) -> None:
    """A normal job is still accepted after whatever came before."""
    resp = await client.post("/api/jobs", data=form(style=PAINTING))
    assert resp.status == 202, await resp.text()


def json_body(**fields: Any) -> bytes:
    return json.dumps(json_order(**fields)).encode()


# ---- out-of-range parameters: refused at admission, naming the field -----------------------

OUT_OF_RANGE: dict[str, tuple[str, Any]] = {
    "multipart seed 2^70": ("seed", {"seed": "1180591620717411303424"}),
    "multipart seed -1": ("seed", {"seed": "-1"}),
    "json seed 2^64": ("seed", {"seed": 2**64}),
    "json seed 2^63": ("seed", {"seed": 2**63}),
    "multipart weights sum to inf": (
        "style_weights",
        {"style": TWO, "style_weights": "1e308,1e308"},
    ),
    "multipart weight normalises to 0": (
        "style_weights",
        {"style": TWO, "style_weights": "1e308,1e-308"},
    ),
    "json weights sum to inf": (
        "style_weights",
        {"style": [PAINTING, "painting:udnie"], "style_weights": [1e308, 1e308]},
    ),
    "json weights in items sum to inf": (
        "style_weights",
        {"style": [{"id": PAINTING, "weight": 1e308}, {"id": "painting:udnie", "weight": 1e308}]},
    ),
    "multipart weight overflows": ("style_weights", {"style": TWO, "style_weights": "1e999,1"}),
    "multipart content_weight overflows": ("content_weight", {"content_weight": "1e999"}),
    "multipart tv_weight inf": ("tv_weight", {"tv_weight": "inf"}),
    "json content_weight 10^400": ("content_weight", {"content_weight": 10**400}),
    "json strength 10^400": ("strength", {"strength": 10**400}),
    "json style weight 10^400": (
        "style_weights",
        {"style": [PAINTING], "style_weights": [10**400]},
    ),
}


@pytest.mark.parametrize("case", OUT_OF_RANGE, ids=list(OUT_OF_RANGE))
async def test_values_a_node_could_not_be_sent_are_refused_naming_the_field(
    start: Start, case: str
) -> None:
    field, fields = OUT_OF_RANGE[case]
    fields = {"style": PAINTING, **fields}
    client = await start()
    if case.startswith("multipart"):
        resp = await client.post("/api/jobs", data=form(**fields))
    else:
        resp = await client.post("/api/jobs", data=json_body(**fields), headers=JSON)
    assert resp.status == 400
    assert f"`{field}`" in await refused(resp)
    await still_serves(client)


async def test_values_at_the_edges_are_admitted_and_encode_as_an_offer(start: Start) -> None:
    client = await start()
    fields = {
        "style": [{"id": PAINTING, "weight": 1e-300}, {"id": "painting:udnie", "weight": 1e-300}],
        "seed": 2**63 - 1,
        "content_weight": 1e308,
        "style_scale": 4,  # the table's upper edge, as a JSON int (strength is not gatys')
    }
    resp = await client.post("/api/jobs", data=json_body(**fields), headers=JSON)
    assert resp.status == 202, await resp.text()
    node = FakeNode.connect(client.app[SERVICE])
    message = wire_offer(await node.offer())
    assert message.params["seed"] == 2**63 - 1 == MAX_UINT
    assert message.params["content_weight"] == 1e308
    assert message.params["style_scale"] == 4.0
    assert [s.weight for s in message.style_images] == [0.5, 0.5]


def test_the_protocol_says_which_param_values_and_weights_travel() -> None:
    assert all(is_param(v) for v in (True, -(2**63), 2**63 - 1, 1e308, "x" * 16384))
    assert not any(is_param(v) for v in (2**63, -(2**63) - 1, float("inf"), float("nan")))
    assert not any(is_param(v) for v in ("x" * 16385, None, [1], b"x"))
    assert is_weight(5e-324) and is_weight(1.0)
    assert not any(is_weight(v) for v in (0.0, -1.0, float("inf"), float("nan"), 1, True))


# ---- malformed requests: 4xx with a JSON error, and the relay goes on ------------------------


def _b64() -> str:
    return base64.b64encode(png()).decode()


def _part(name: str, body: bytes, extra: str = "") -> bytes:
    """One part of a `boundary=xx` multipart body."""
    head = f'--xx\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'
    return head.encode() + body + b"\r\n"


def _multipart(*parts: bytes, end: bytes = b"--xx--\r\n") -> bytes:
    """A job request with a photo and a style, then `parts` (so only they can be wrong)."""
    return b"".join((_part("content", png()), _part("style", PAINTING.encode()), *parts, end))


def _order(fields: str) -> Callable[[], bytes]:
    """A JSON job request with a photo and a style, then `fields` as raw JSON text."""

    def body() -> bytes:
        return f'{{"image": "{_b64()}", "style": ["{PAINTING}"], {fields}}}'.encode()

    return body


MP = "multipart/form-data; boundary=xx"
MALFORMED: dict[str, tuple[str, Callable[[], bytes]]] = {
    "json nested arrays": ("application/json", lambda: b"[" * 100_000),
    "json nested objects": ("application/json", lambda: b'{"a":' * 100_000),
    "json nested in a field": (
        "application/json",
        lambda: b'{"style": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ),
    "json 5000-digit seed": ("application/json", _order('"seed": ' + "9" * 5000)),
    "json 5000-digit epochs": ("application/json", _order('"epochs": ' + "9" * 5000)),
    "json 5000-digit float": ("application/json", _order('"strength": 0.' + "9" * 5000 + "e9")),
    "json NaN": ("application/json", _order('"seed": NaN')),
    "json Infinity weight": ("application/json", _order('"style_weights": [Infinity]')),
    "json 1e999": ("application/json", _order('"tv_weight": 1e999')),
    "json not utf-8": ("application/json", lambda: b'{"style": "\xff\xfe"}'),
    "json utf-16": (
        "application/json",
        lambda: json_body(style=PAINTING).decode().encode("utf-16"),
    ),
    "json duplicate keys": ("application/json", _order('"epochs": 1, "epochs": 2')),
    "json 200,000 styles": (
        "application/json",
        lambda: json.dumps({"image": _b64(), "style": [PAINTING] * 200_000}).encode(),
    ),
    "json many small values": (
        "application/json",
        lambda: json.dumps({"image": _b64(), "style": PAINTING, "x": [0] * 300_000}).encode(),
    ),
    "json huge email": ("application/json", lambda: json_body(style=PAINTING, email="a" * 10**6)),
    "json huge email address": (
        "application/json",
        lambda: json_body(style=PAINTING, email="a@" + "b." * 500_000 + "c"),
    ),
    "json dict epochs": ("application/json", lambda: json_body(style=PAINTING, epochs={"a": 1})),
    "json dict method": ("application/json", lambda: json_body(style=PAINTING, method={"a": 1})),
    "json list filename": ("application/json", lambda: json_body(style=PAINTING, filename=[1])),
    "json dict email": ("application/json", lambda: json_body(style=PAINTING, email={"a": 1})),
    "json number filename": ("application/json", lambda: json_body(style=PAINTING, filename=7)),
    "json dict seed": ("application/json", lambda: json_body(style=PAINTING, seed={"a": 1})),
    "json list keep_colors": (
        "application/json",
        lambda: json_body(style=PAINTING, keep_colors=[]),
    ),
    "json dict style weight": (
        "application/json",
        lambda: json_body(style=[{"id": PAINTING, "weight": {"a": 1}}]),
    ),
    "json array body": ("application/json", lambda: b"[1, 2]"),
    "json empty body": ("application/json", lambda: b""),
    "json with a multipart type": (MP, lambda: json_body(style=PAINTING)),
    "multipart without boundary": ("multipart/form-data", lambda: b"--xx\r\n\r\n"),
    "multipart empty boundary": ("multipart/form-data; boundary=", lambda: b"--\r\n"),
    "multipart part header line over 8 KB": (
        MP,
        lambda: _multipart(_part("filename", b"x", f'; filename="{"a" * 20_000}"')),
    ),
    "multipart 5000-digit epochs": (MP, lambda: _multipart(_part("epochs", b"9" * 5000))),
    "multipart 5000-digit seed": (MP, lambda: _multipart(_part("seed", b"9" * 5000))),
    "multipart cut short": (MP, lambda: _multipart(b"--xx\r\nContent-Disp", end=b"")),
    "multipart no closing boundary": (MP, lambda: _multipart(_part("epochs", b"5"), end=b"")),
    "multipart fields twice": (
        MP,
        lambda: _multipart(_part("epochs", b"1"), _part("epochs", b"2")),
    ),
    "multipart 16 KB email": (MP, lambda: _multipart(_part("email", b"a" * 16_000))),
    "multipart 16 KB method": (MP, lambda: _multipart(_part("method", b"a" * 16_000))),
    "multipart 16 KB style": (MP, lambda: _multipart(_part("style", b"a" * 16_000))),
    "text/plain": ("text/plain", lambda: b"hello"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
async def test_malformed_requests_get_a_json_4xx_and_the_relay_goes_on(
    start: Start, case: str
) -> None:
    content_type, body = MALFORMED[case]
    client = await start()
    resp = await client.post(
        "/api/jobs", data=io.BytesIO(body()), headers={"Content-Type": content_type}
    )
    await refused(resp)
    await still_serves(client)


async def test_a_huge_style_index_is_a_404_not_a_traceback(start: Start) -> None:
    client = await start()
    resp = await client.post("/api/jobs", data=form(style=PAINTING))
    job = await resp.json()
    answer = await client.get(f"/api/jobs/{job['id']}/style/{'9' * 5000}")
    assert answer.status == 404
    assert "style image" in await refused(answer)
    assert (await client.get(f"/api/jobs/{job['id']}/style/0")).status == 200


async def test_a_long_header_line_in_a_file_part_is_refused(start: Start) -> None:
    client = await start()
    data = FormData()
    data.add_field("content", io.BytesIO(png()), filename="p" * 20_000 + ".png")
    data.add_field("style", PAINTING)
    assert "header" in (await refused(await client.post("/api/jobs", data=data))).lower()
    await still_serves(client)


# ---- 16-bit PNGs -----------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png16(samples: list[int], color_type: int, channels: int, extra: bytes = b"") -> bytes:
    """A 16-bit PNG, written by hand: each of `samples` fills a 16-pixel-wide band of a
    64×16 image; every channel of a pixel takes the sample, alpha (if any) is opaque."""
    width, height = 16 * len(samples), 16
    ihdr = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    pixels = []
    for value in samples:
        pixel = [value] * channels
        if color_type in (4, 6):
            pixel[-1] = 65535
        pixels += pixel * 16
    row = b"\x00" + struct.pack(f">{len(pixels)}H", *pixels)
    idat = zlib.compress(row * height)
    return b"".join((b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", ihdr), extra,
                     _chunk(b"IDAT", idat), _chunk(b"IEND", b"")))  # fmt: skip


SAMPLES = [0, 16384, 32768, 65535]
EXPECTED = [0, 64, 128, 255]


def _bands(data: bytes) -> list[tuple[int, ...]]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "RGB"
        return [img.getpixel((16 * i + 8, 8)) for i in range(len(SAMPLES))]  # type: ignore[misc]


@pytest.mark.parametrize(
    ("color_type", "channels"), [(0, 1), (4, 2), (2, 3), (6, 4)], ids=["grey", "LA", "RGB", "RGBA"]
)
def test_16_bit_pngs_keep_their_tones(color_type: int, channels: int) -> None:
    prepared = prepare(png16(SAMPLES, color_type, channels), 512, "The photo")
    bands = _bands(prepared.png)
    for got, want in zip(bands, EXPECTED, strict=True):
        assert all(abs(c - want) <= 1 for c in got), (bands, EXPECTED)


def test_16_bit_grey_with_a_transparent_value_is_flattened_onto_white() -> None:
    trns = _chunk(b"tRNS", struct.pack(">H", 16384))
    bands = _bands(prepare(png16(SAMPLES, 0, 1, trns), 512, "The photo").png)
    assert bands == [(0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 255, 255)]


async def test_a_16_bit_photo_reaches_the_node_in_its_tones(start: Start) -> None:
    client = await start()
    data = FormData()
    data.add_field("content", io.BytesIO(png16(SAMPLES, 0, 1)), filename="grey16.png")
    data.add_field("style", PAINTING)
    resp = await client.post("/api/jobs", data=data)
    assert resp.status == 202, await resp.text()
    node = FakeNode.connect(client.app[SERVICE])
    assert [b[0] for b in _bands((await node.offer()).content_png)] == EXPECTED


# ---- a failed job's attempts -------------------------------------------------------------------


async def test_a_job_that_gave_up_shows_the_attempts_it_names(start: Start) -> None:
    client = await start()
    resp = await client.post("/api/jobs", data=form(style=PAINTING))
    job_id = (await resp.json())["id"]
    reports = NodeReports(client.app[SERVICE])
    for turn in range(3):
        node = FakeNode.connect(reports, name=f"gpu-{turn}")
        await node.offer()
        node.lost()
    body = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert body["state"] == "failed"
    assert body["attempts"] == 3
    assert "after 3 attempts" in body["error"]
    # The stored row agrees too (what a restarted relay would show).
    assert client.app[SERVICE].store.get(job_id).attempts == 3  # type: ignore[union-attr]
