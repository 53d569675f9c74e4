"""Upload checks happen before decoding; decoding makes an upright RGB PNG at the job's size."""

import io

import pytest
from PIL import Image
from relay_images import image_bytes, jpeg_rotated, png_header_only

from relay import uploads
from relay.decoding import Decoder
from relay.errors import BadRequest, TooLarge

MB = 1024 * 1024


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
async def test_accepted_formats_become_png_at_size(fmt: str) -> None:
    data = image_bytes(fmt, (200, 100))
    decoder = Decoder(1)
    prepared = await uploads.load(
        data, max_bytes=MB, max_pixels=10**6, size=50, what="The photo", decoder=decoder
    )
    decoder.close()
    assert (prepared.width, prepared.height) == (50, 25)
    with Image.open(io.BytesIO(prepared.png)) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", (50, 25))


def test_small_images_are_not_scaled_up() -> None:
    prepared = uploads.prepare(image_bytes("PNG", (40, 30)), 512, "The photo")
    assert (prepared.width, prepared.height) == (40, 30)


def test_byte_cap_comes_first() -> None:
    with pytest.raises(TooLarge, match=r"The photo is 2\.0 MB; the limit is 1\.0 MB"):
        uploads.check_bytes(2 * MB, MB, "The photo")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"hello, I am a text file", "is not an image"),
        (image_bytes("GIF", (10, 10), "P"), "is a GIF image"),
        (image_bytes("BMP", (10, 10)), "is a BMP image"),
    ],
)
def test_non_images_and_other_formats_are_refused(data: bytes, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        uploads.probe(data, 10**6, "The photo")


def test_pixel_cap_reads_the_header_only() -> None:
    with pytest.raises(BadRequest, match=r"300×200 = 60,000 pixels; the limit is 50,000"):
        uploads.probe(png_header_only(300, 200), 50_000, "The photo")


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_decompression_bombs_are_refused(side: int) -> None:
    # 10k² trips Pillow's bomb warning, 20k² its bomb error; both become a clear 400.
    bomb = png_header_only(side, side)
    assert len(bomb) < 200
    with pytest.raises(BadRequest, match="decompression bomb"):
        uploads.probe(bomb, 89_000_000, "The photo")


def test_exif_orientation_is_applied() -> None:
    prepared = uploads.prepare(jpeg_rotated((60, 40), orientation=6), 512, "The photo")
    assert (prepared.width, prepared.height) == (40, 60)


def test_transparency_is_flattened_on_white() -> None:
    img = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    out = io.BytesIO()
    img.save(out, format="PNG")
    prepared = uploads.prepare(out.getvalue(), 512, "The photo")
    with Image.open(io.BytesIO(prepared.png)) as result:
        assert result.getpixel((5, 5)) == (255, 255, 255)


def test_truncated_file_is_reported_as_damaged() -> None:
    whole = image_bytes("JPEG", (300, 200))
    data = whole[: len(whole) // 2]
    with pytest.raises(BadRequest, match="damaged or cut short"):
        uploads.prepare(data, 512, "The photo")


def test_too_narrow_after_scaling_is_refused() -> None:
    with pytest.raises(BadRequest, match="too small or too narrow"):
        uploads.prepare(image_bytes("PNG", (800, 10)), 512, "The photo")
