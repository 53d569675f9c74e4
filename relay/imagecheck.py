"""Checking the images nodes send before the relay keeps or serves them.

A node is not trusted: its result must be a PNG of exactly the job's size and its previews
JPEGs no larger than the job, each with nothing after the image's end (no HTML or script
riding along for a browser to sniff), within the pixel ceiling and fully decodable.

    checker = ImageChecker(decoder)             # the relay's `relay.decoding.Decoder`
    await checker.png(data, width, height)      # raises BadImage, saying why
    await checker.jpeg(data, width, height)

The checks are plain functions (`check_png`, `check_jpeg`); `ImageChecker` runs them on the
relay's bounded decoding threads, so decoding never blocks the event loop and a flood of
images queues instead of taking every core.
"""

import io
import struct

from PIL import Image

from relay.config import PIXEL_CEILING
from relay.decoding import Decoder
from relay.offload import INLINE_COST

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
_PNG_CHUNK = struct.Struct(">I4s")
# JPEG markers that stand alone, without a length: TEM and the restart markers.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_EOI, _SOS = 0xD9, 0xDA


class BadImage(ValueError):
    """A node's image is unusable; the message says why, for logs and requeue reasons."""


def check_png(data: bytes, width: int, height: int) -> None:
    """Accept `data` only as a whole PNG of exactly `width`×`height` pixels."""
    end = _png_end(data)
    if end != len(data):
        raise BadImage(f"{len(data) - end:,} bytes after the image's end")
    size = struct.unpack(">II", data[16:24])
    if size != (width, height):
        raise BadImage(f"the PNG is {size[0]}x{size[1]}, the job is {width}x{height}")
    _decode(data, "PNG", (width, height))


def check_jpeg(data: bytes, max_width: int, max_height: int) -> None:
    """Accept `data` only as a whole JPEG at most `max_width`×`max_height` pixels."""
    end = _jpeg_end(data)
    if end != len(data):
        raise BadImage(f"{len(data) - end:,} bytes after the image's end")
    _decode(data, "JPEG", (max_width, max_height))


def _decode(data: bytes, fmt: str, bound: tuple[int, int]) -> None:
    """Open as `fmt` only, refuse it above `bound` or the pixel ceiling, then decode it all."""
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:
            width, height = img.size
            if width > bound[0] or height > bound[1]:
                raise BadImage(
                    f"the {fmt} is {width}x{height}, larger than the job's {bound[0]}x{bound[1]}"
                )
            if width * height > PIXEL_CEILING:
                raise BadImage(f"{width}x{height} is above {PIXEL_CEILING:,} pixels")
            img.load()
    except BadImage:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImage(f"the {fmt} cannot be decoded: {exc}") from None


def _png_end(data: bytes) -> int:
    """Where the PNG's IEND chunk ends; the chunks are walked, not decoded."""
    if not data.startswith(PNG_MAGIC):
        raise BadImage("not a PNG")
    pos, first = len(PNG_MAGIC), True
    while True:
        if pos + _PNG_CHUNK.size > len(data):
            raise BadImage("the PNG is truncated")
        length, kind = _PNG_CHUNK.unpack_from(data, pos)
        length = int(length)
        if first and (kind != b"IHDR" or length != 13):
            raise BadImage("the PNG does not start with its header chunk")
        first = False
        pos += _PNG_CHUNK.size + length + 4  # the chunk's data and CRC
        if pos > len(data):
            raise BadImage("the PNG is truncated")
        if kind == b"IEND":
            return pos


def _jpeg_end(data: bytes) -> int:
    """Where the JPEG's EOI marker ends; segments are skipped by length, scan data by
    looking for the next marker (0xFF not followed by a stuffed 0x00 or a restart)."""
    if not data.startswith(JPEG_SOI):
        raise BadImage("not a JPEG")
    pos, size = len(JPEG_SOI), len(data)
    while True:
        if pos >= size or data[pos] != 0xFF:
            raise BadImage("the JPEG is truncated" if pos >= size else "a broken JPEG marker")
        while pos < size and data[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= size:
            raise BadImage("the JPEG is truncated")
        code = data[pos]
        pos += 1
        if code == _EOI:
            return pos
        if code in _STANDALONE:
            continue
        if pos + 2 > size:
            raise BadImage("the JPEG is truncated")
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            raise BadImage("a broken JPEG segment")
        pos += length
        if pos > size:
            raise BadImage("the JPEG is truncated")
        if code == _SOS:
            pos = _scan_end(data, pos)


def _scan_end(data: bytes, pos: int) -> int:
    while True:
        found = data.find(b"\xff", pos)
        if found < 0 or found + 1 >= len(data):
            raise BadImage("the JPEG is truncated")
        follower = data[found + 1]
        if follower != 0x00 and follower not in _STANDALONE:
            return found
        pos = found + 2


class ImageChecker:
    """Runs the checks on the decoder's thread for nodes' images (`Decoder.check`): bounded,
    and never behind the uploads' queue."""

    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder

    async def png(self, data: bytes, width: int, height: int) -> None:
        """`check_png` off the event loop."""
        await self._decoder.check(width * height * 3, check_png, data, width, height)

    async def jpeg(self, data: bytes, max_width: int, max_height: int) -> None:
        """`check_jpeg` off the event loop (even a small preview: a node chooses its bytes)."""
        cost = max(max_width * max_height * 3, INLINE_COST + 1)
        await self._decoder.check(cost, check_jpeg, data, max_width, max_height)
