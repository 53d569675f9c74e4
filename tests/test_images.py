"""Image input: every awkward or hostile file is converted, turned upright, or refused."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpu_node.errors import ImageError
from gpu_node.images import (
    encode_jpeg,
    encode_png,
    open_image,
    resize_long_side,
)

MAX = 4_000_000


def _save(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and carries no real pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _px(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def _refused(source: bytes | str | Path, **kwargs: int) -> str:
    with pytest.raises(ImageError) as info:
        open_image(source, max_pixels=kwargs.get("max_pixels", MAX))
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_plain_rgb_round_trips_exactly() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    img = open_image(_save(Image.fromarray(pixels), "PNG"), max_pixels=MAX)
    assert img.mode == "RGB" and img.size == (32, 24)
    assert np.array_equal(np.array(img), pixels)


def test_reads_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (20, 30), (1, 2, 3)).save(path)
    img = open_image(path, max_pixels=MAX)
    assert img.size == (20, 30) and _px(img, (0, 0)) == (1, 2, 3)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert "no such file" in _refused(tmp_path / "nope.png")
    assert "directory" in _refused(tmp_path)


def test_non_image_and_empty_are_refused() -> None:
    assert "not an image" in _refused(b"this is a text file, not a picture\n" * 10)
    assert "empty" in _refused(b"")


def test_corrupt_png_is_refused() -> None:
    rng = np.random.default_rng(1)
    data = _save(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "PNG")
    assert "corrupt" in _refused(data[: len(data) // 2])


def test_corrupt_jpeg_is_refused() -> None:
    rng = np.random.default_rng(2)
    data = _save(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")
    assert "corrupt" in _refused(data[: len(data) // 3])


def test_too_many_pixels_refused_from_the_header_before_decoding() -> None:
    # The IDAT holds 64 bytes, not 3000x3000 pixels: decoding would fail differently.
    message = _refused(_png_header_only(3000, 3000), max_pixels=1_000_000)
    assert "9,000,000 pixels" in message and "1,000,000" in message


@pytest.mark.parametrize("side", [12_000, 100_000])
def test_decompression_bomb_refused(side: int) -> None:
    # 12000^2 trips Pillow's warning (an error under pytest) and 100000^2 its hard limit:
    # both end as one ImageError, and Pillow's global limit is left alone.
    before = Image.MAX_IMAGE_PIXELS
    message = _refused(_png_header_only(side, side))
    assert "pixels" in message
    assert before == Image.MAX_IMAGE_PIXELS


def test_greyscale_becomes_grey_rgb() -> None:
    grey = Image.fromarray(np.arange(0, 256, dtype=np.uint8).reshape(16, 16))
    img = open_image(_save(grey, "PNG"), max_pixels=MAX)
    array = np.array(img)
    assert img.mode == "RGB"
    assert np.array_equal(array[..., 0], np.array(grey))
    assert np.array_equal(array[..., 0], array[..., 2])


def test_palette_keeps_its_colours() -> None:
    rgb = Image.new("RGB", (20, 20), (200, 30, 40))
    rgb.paste((10, 120, 250), (0, 0, 10, 20))
    img = open_image(_save(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), max_pixels=MAX)
    assert img.mode == "RGB"
    assert _px(img, (2, 2)) == (10, 120, 250)
    assert _px(img, (15, 2)) == (200, 30, 40)


def test_palette_with_transparency_is_composited_on_white() -> None:
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (10, 0, 20, 20))
    img = open_image(_save(pal, "PNG", transparency=0), max_pixels=MAX)
    assert _px(img, (2, 2)) == (255, 255, 255)
    assert _px(img, (15, 2)) == (255, 0, 0)


def test_rgba_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (10, 0, 20, 20))
    rgba.paste((0, 0, 255, 128), (0, 10, 10, 20))
    img = open_image(_save(rgba, "PNG"), max_pixels=MAX)
    assert _px(img, (2, 2)) == (255, 255, 255)  # fully transparent
    assert _px(img, (15, 2)) == (255, 0, 0)  # opaque
    r, g, b = _px(img, (2, 15))  # half blue over white
    assert b == 255 and 120 <= r <= 135 and r == g


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.full((20, 20), 32768, dtype=np.uint16)
    values[:, 10:] = 65535
    wide = Image.fromarray(values)
    assert wide.mode.startswith("I;16")
    img = open_image(_save(wide, "PNG"), max_pixels=MAX)
    assert img.mode == "RGB"
    assert _px(img, (2, 2)) == (128, 128, 128)
    assert _px(img, (15, 2)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (32, 32), (255, 0, 0, 0))  # pure cyan ink
    img = open_image(_save(cmyk, "JPEG", quality=95), max_pixels=MAX)
    assert img.mode == "RGB"
    r, g, b = _px(img, (16, 16))
    assert r < 30 and g > 225 and b > 225


def test_exif_rotation_is_applied() -> None:
    # Stored 40 wide, 20 tall, red on the left; orientation 6 means "turn 90° clockwise",
    # so upright it is 20 wide, 40 tall, red on top.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    img = open_image(_save(stored, "JPEG", quality=95, exif=exif), max_pixels=MAX)
    assert img.size == (20, 40)
    top, bottom = _px(img, (10, 5)), _px(img, (10, 35))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_one_pixel_image_is_refused() -> None:
    assert "too small" in _refused(_save(Image.new("RGB", (1, 1)), "PNG"))


def test_extremely_thin_image_is_refused() -> None:
    assert "too thin" in _refused(_save(Image.new("RGB", (2000, 20)), "PNG"))
    assert "too small" in _refused(_save(Image.new("RGB", (3000, 3)), "PNG"))


def test_resize_long_side_keeps_aspect() -> None:
    img = Image.new("RGB", (400, 300))
    assert resize_long_side(img, 200).size == (200, 150)
    assert resize_long_side(Image.new("RGB", (300, 400)), 800).size == (600, 800)
    with pytest.raises(ImageError):
        resize_long_side(img, 0)


def test_encoders_round_trip() -> None:
    img = Image.new("RGB", (20, 20), (10, 200, 30))
    assert open_image(encode_png(img), max_pixels=MAX).getpixel((5, 5)) == (10, 200, 30)
    r, g, b = _px(open_image(encode_jpeg(img, 90), max_pixels=MAX), (5, 5))
    assert abs(r - 10) < 6 and abs(g - 200) < 6 and abs(b - 30) < 6
    with pytest.raises(ImageError):
        encode_jpeg(img, 0)
