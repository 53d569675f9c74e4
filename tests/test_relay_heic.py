"""HEIC/HEIF photos (what iPhones send) pass the same checks as the other formats, and
one-pass methods keep the photo's own size by default."""

import io
import struct
from pathlib import Path
from typing import Any

import pillow_heif
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, form, make_config, png

from relay import uploads
from relay.api import SERVICE
from relay.app import init
from relay.decoding import Decoder
from relay.errors import BadRequest

Client = TestClient[web.Request, web.Application]
MB = 1024 * 1024


def heic(size: tuple[int, int] = (120, 80), orientation: int | None = None) -> bytes:
    """A real HEIC, encoded by libheif (x265); EXIF orientation stored when given."""
    img = Image.new("RGB", size, (200, 30, 30))
    img.paste((20, 30, 200), (0, 0, size[0] // 2, size[1]))  # left half blue
    heif = pillow_heif.from_pillow(img)
    out = io.BytesIO()
    if orientation is None:
        heif.save(out, quality=90)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        heif.save(out, quality=90, exif=exif.tobytes())
    return out.getvalue()


def claiming(data: bytes, width: int, height: int) -> bytes:
    """`data` with its HEIF `ispe` box (the image's declared size) rewritten."""
    at = data.index(b"ispe") + 8  # after the box type, version and flags
    return data[:at] + struct.pack(">II", width, height) + data[at + 8 :]


async def test_heic_is_accepted_and_becomes_png_at_size() -> None:
    data = heic((200, 100))
    assert uploads.probe(data, 10**6, "The photo").format == "HEIF"
    decoder = Decoder(1)
    prepared = await uploads.load(
        data, max_bytes=MB, max_pixels=10**6, size=50, what="The photo", decoder=decoder
    )
    decoder.close()
    assert (prepared.width, prepared.height) == (50, 25)
    with Image.open(io.BytesIO(prepared.png)) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", (50, 25))


def test_heic_over_the_pixel_cap_is_refused_from_its_header() -> None:
    with pytest.raises(BadRequest, match=r"120×80 = 9,600 pixels; the limit is 5,000"):
        uploads.probe(heic(), 5_000, "The photo")


@pytest.mark.parametrize("side", [20_000, 60_000])
def test_heic_claiming_a_huge_size_is_refused(side: int) -> None:
    bomb = claiming(heic(), side, side)
    with pytest.raises(BadRequest, match=r"decompression bomb|pixels; the limit"):
        uploads.probe(bomb, 10**6, "The photo")


def test_heic_orientation_is_applied() -> None:
    prepared = uploads.prepare(heic((60, 40), orientation=6), 512, "The photo")
    assert (prepared.width, prepared.height) == (40, 60)


def test_heic_decodes_are_charged_to_the_memory_budget() -> None:
    header = uploads.probe(heic((120, 80)), 10**6, "The photo")
    # Measured: libde265's planes plus the RGB copy, about 10.6 bytes a pixel with alpha.
    assert uploads.decode_memory(header) >= 11 * 120 * 80


async def test_api_takes_a_heic_photo_and_lists_the_format(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    clock = FakeClock()
    client: Client = await aiohttp_client(init(make_config(tmp_path), clock, clock))
    limits = (await (await client.get("/api/styles")).json())["limits"]
    assert "heic" in limits["formats"]
    data = form(heic((200, 100)), style="painting:starry_night", size="64")
    resp = await client.post("/api/jobs", data=data)
    assert resp.status == 202, await resp.text()
    job = await resp.json()
    content = await client.get(f"/api/jobs/{job['id']}/content")
    with Image.open(io.BytesIO(await content.read())) as img:
        assert (img.format, img.size) == ("PNG", (64, 32))
    bomb = form(claiming(heic(), 30_000, 30_000), style="painting:starry_night")
    resp = await client.post("/api/jobs", data=bomb)
    assert resp.status == 400
    assert "The photo" in (await resp.json())["error"]


async def _size_of(client: Client, photo: bytes, **fields: str) -> tuple[Any, tuple[int, int]]:
    resp = await client.post("/api/jobs", data=form(photo, **fields))
    assert resp.status == 202, await resp.text()
    job = await resp.json()
    content = await client.get(f"/api/jobs/{job['id']}/content")
    with Image.open(io.BytesIO(await content.read())) as img:
        return job["params"]["size"], img.size


async def test_one_pass_methods_default_to_the_photos_size(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    clock = FakeClock()
    config = make_config(tmp_path, max_size=1024, default_size=512, max_pixels=4_000_000)
    client: Client = await aiohttp_client(init(config, clock, clock))
    assert client.app[SERVICE].config.default_size == 512
    photo = png((900, 600))
    arbitrary = await _size_of(client, photo, style="painting:starry_night", method="arbitrary")
    assert arbitrary == (900, (900, 600))
    # Larger than the relay's max_size: scaled to it.
    wide = png((1500, 1000))
    big = await _size_of(client, wide, style="painting:starry_night", method="arbitrary")
    assert big == (1024, (1024, 683))
    # Gatys keeps the relay's default size; an explicit size is kept by all.
    assert await _size_of(client, photo, style="painting:starry_night", epochs="10") == (
        512,
        (512, 341),
    )
    explicit = await _size_of(
        client, photo, style="painting:starry_night", method="arbitrary", size="256"
    )
    assert explicit == (256, (256, 171))
