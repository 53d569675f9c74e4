"""Safe image input and output with Pillow (no torch).

`open_image` is the one door through which a person's file enters the node. It reads the
header first and refuses, before any pixel is decoded, images that are too large (a
decompression bomb), too small, or too thin; then it decodes, turns the picture upright
from its EXIF orientation, and converts every mode to 8-bit RGB:

    greyscale (1, L, I, I;16, F)   -> grey RGB (16-bit values scaled, not clipped)
    palette (P, PA)                -> RGB, transparency composited on white
    with alpha (RGBA, LA, ...)     -> composited on white
    CMYK, YCbCr, LAB, HSV          -> RGB through Pillow's converters

Everything refused raises `ImageError` with a one-line message a person can act on.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gpu_node.errors import ImageError

# A VGG feature pyramid halves the picture four times; below 16 px the deepest layers
# see less than one pixel, and nothing recognisable can be drawn.
MIN_SIDE = 16
# Panoramas run to about 10:1; past 20:1 the picture is a strip, not an image to style.
MAX_ASPECT = 20.0
# Around 50 megapixels: bigger than any camera photo a person would style, far below a bomb.
DEFAULT_MAX_PIXELS = 50_000_000

# What a broken or hostile file can make Pillow raise while reading a header or decoding.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)
_WHITE = (255, 255, 255)


def _read(source: str | Path | bytes) -> tuple[bytes, str]:
    """The raw bytes of `source` and a name for messages."""
    if isinstance(source, bytes):
        return source, "the image"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def check_size(
    width: int,
    height: int,
    *,
    max_pixels: int,
    name: str = "the image",
    min_side: int = MIN_SIDE,
    max_aspect: float = MAX_ASPECT,
) -> None:
    """Refuse a picture whose size is too large, too small or too thin (ImageError)."""
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,}; scale it down first"
        )
    if min(width, height) < min_side:
        raise ImageError(
            f"{name}: {width}x{height} is too small; each side needs at least {min_side} px"
        )
    if max(width, height) / min(width, height) > max_aspect:
        raise ImageError(
            f"{name}: {width}x{height} is too thin; the long side may be at most "
            f"{max_aspect:g} times the short side"
        )


def open_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = MIN_SIDE,
    max_aspect: float = MAX_ASPECT,
) -> Image.Image:
    """Decode `source` (a path or the file's bytes) into an upright 8-bit RGB image.

    Raises ImageError for anything that is not a usable picture.
    """
    data, name = _read(source)
    if not data:
        raise ImageError(f"{name}: the file is empty")
    # The size check below is ours; Pillow's own bomb guard reads module-level state that
    # other code may change, so its warning is silenced and its hard error merely reworded.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not an image Pillow can read") from None
        except Image.DecompressionBombError:
            raise ImageError(f"{name}: far too many pixels (a decompression bomb?)") from None
        except _DECODE_ERRORS as exc:
            raise ImageError(f"{name}: corrupt image header ({exc})") from None
        width, height = img.size
        check_size(
            width, height, max_pixels=max_pixels, name=name, min_side=min_side,
            max_aspect=max_aspect,
        )  # fmt: skip
        try:
            img.load()
            upright = ImageOps.exif_transpose(img)
        except Image.DecompressionBombError:
            raise ImageError(f"{name}: far too many pixels (a decompression bomb?)") from None
        except _DECODE_ERRORS as exc:
            raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None
    return to_rgb(upright if upright is not None else img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; alpha is composited on white."""
    match img.mode:
        case "RGB":
            return img
        case "I;16" | "I;16L" | "I;16B" | "I;16N" | "I" | "F":
            return _wide_grey_to_rgb(img)
        case "RGBA" | "LA" | "PA" | "RGBa" | "La":
            return _on_white(img.convert("RGBA"))
        case "P" if "transparency" in img.info:
            return _on_white(img.convert("RGBA"))
        case _:
            return img.convert("RGB")


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _wide_grey_to_rgb(img: Image.Image) -> Image.Image:
    # Pillow's own convert clips 16-bit values at 255, which turns most photos white.
    values = np.array(img, dtype=np.float64)
    if img.mode == "F":
        top = 1.0 if values.size and float(values.max()) <= 1.0 else 255.0
    else:
        top = 65535.0 if values.size and float(values.max()) > 255 else 255.0
    grey = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey, grey, grey], axis=-1))


def resize_long_side(img: Image.Image, size: int) -> Image.Image:
    """Scale `img` so its longer side is `size` pixels, keeping the aspect ratio."""
    if size < 1:
        raise ImageError(f"size must be at least 1 px, not {size}")
    width, height = img.size
    scale = size / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new == img.size:
        return img
    # Lanczos keeps detail when shrinking; bicubic rings less when enlarging.
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    return img.resize(new, resample)


def encode_png(img: Image.Image) -> bytes:
    """The image as PNG bytes."""
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def encode_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    """The image as baseline JPEG bytes at `quality` (1-95)."""
    if not 1 <= quality <= 95:
        raise ImageError(f"JPEG quality must be between 1 and 95, not {quality}")
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()
