"""Uploaded images: checked before decoding, then decoded and scaled off the event loop.

Order of checks, cheapest first: the byte cap (413), then the pixel count read from the
file header by Pillow's lazy `open` (400), the format (PNG, JPEG, WebP or HEIC), and only then a
full decode on the relay's decoding threads (`relay.decoding`), with EXIF orientation
applied and the image scaled to the job's size, re-encoded as PNG. Pillow's module-global
pixel limit is left alone: our own cap sits below it (see `relay.config.PIXEL_CEILING`),
and its bomb warning is caught as a refusal.
"""

import importlib
import io
import warnings
from dataclasses import dataclass
from types import ModuleType

from PIL import Image, ImageOps, UnidentifiedImageError

from relay.decoding import Decoder
from relay.errors import BadRequest, TooLarge
from relay.model import PreparedImage

_webp: ModuleType | None
try:  # Pillow's binding of libwebp; absent when built without WebP, which it then refuses
    _webp = importlib.import_module("PIL._webp")
except ImportError:  # pragma: no cover
    _webp = None
if _webp is not None and not hasattr(_webp, "WebPAnimDecoder"):  # pragma: no cover
    # An internal of Pillow's: should a release rename it, WebP takes Pillow's own (hungrier)
    # path rather than failing.
    _webp = None

try:  # HEIC/HEIF, what iPhones send: pillow-heif's opener, registered once for the process
    import pillow_heif
except ImportError:  # pragma: no cover - relay installed without it: HEIC is refused
    pass
else:
    # Only the primary picture: thumbnails, depth maps and auxiliary images would cost
    # decoding and memory for nothing.
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

# MPO is how many phone cameras write JPEG; Pillow names it separately.
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP", "HEIF": "HEIC"}
_NAMES = "PNG, JPEG, WebP or HEIC"
MIN_SIDE = 16


@dataclass(frozen=True)
class ImageHeader:
    """What the header says: format and size, before any pixel is decoded."""

    format: str
    width: int
    height: int


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def check_bytes(size: int, cap: int, what: str) -> None:
    """Refuse an upload over the byte cap with 413."""
    if size > cap:
        raise TooLarge(f"{what} is {_mb(size)}; the limit is {_mb(cap)} per image.")


def probe(data: bytes, max_pixels: int, what: str) -> ImageHeader:
    """Read format and size from the header only; refuse non-images, other formats, bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                header = ImageHeader(img.format or "", img.width, img.height)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadRequest(
            f"{what} claims far more pixels than any real picture (a decompression bomb) "
            "and was refused."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BadRequest(f"{what} is not an image. Upload a {_NAMES} file.") from None
    if header.format not in FORMATS:
        raise BadRequest(f"{what} is a {header.format or 'unknown'} image; upload a {_NAMES} file.")
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise BadRequest(
            f"{what} is {header.width}×{header.height} = {pixels:,} pixels; "
            f"the limit is {max_pixels:,} pixels."
        )
    return header


def _scaled(width: int, height: int, size: int) -> tuple[int, int]:
    longest = max(width, height)
    if longest <= size:
        return width, height
    scale = size / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def prepare(data: bytes, size: int, what: str) -> PreparedImage:
    """Decode, shrink cheaply, turn upright, flatten to RGB, scale the long side down to
    `size`, encode PNG.

    Blocking and CPU-heavy: run it through `load`, which keeps big images off the loop.
    Memory is what limits how many of these the relay can run at once, so the full-size
    picture is box-reduced in its own mode to about twice the target before anything else
    copies it, and dropped at once (see `decode_memory` for what is left at the peak).
    """
    try:
        img = _reduced(_decoded(data, size), size)
        # Only pictures with EXIF can carry an orientation, and parsing it costs time.
        if "exif" in img.info:
            img = ImageOps.exif_transpose(img)
        return _finish(img, size, what)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        raise BadRequest(
            f"{what} could not be decoded: the file is damaged or cut short."
        ) from None


def decode_memory(header: ImageHeader) -> int:
    """Bytes `prepare` holds at its peak for an image with this header: its admission cost
    on the relay's memory budget (`relay.decoding`)."""
    return header.width * header.height * _PEAK_BYTES_PER_PIXEL.get(header.format, 8)


# Peaks of `prepare` (RSS growth over pixels, Pillow 13): libwebp's animation decoder, the
# only one Pillow binds, holds two RGBA canvases while the frame is copied out (12 bytes a
# pixel, 12.3 measured); a PNG is 4 bytes a pixel in Pillow, doubled while an alpha channel
# is premultiplied for the reduction; a JPEG at most 4 (libjpeg usually decodes it smaller);
# a HEIC holds libde265's YUV planes beside libheif's RGB(A) and Pillow's copy (9.5 measured,
# 10.6 with alpha, at 3000×2000).
_PEAK_BYTES_PER_PIXEL = {"WEBP": 13, "PNG": 8, "JPEG": 4, "MPO": 4, "HEIF": 12}
# Shrinking by whole boxes to at least this many times the target, then LANCZOS, looks the
# same as LANCZOS all the way (Pillow's `reducing_gap` advice is 2 or more).
_REDUCING_GAP = 2
# Modes Pillow can box-reduce without changing what the picture means (not palettes or
# colour-keyed transparency, whose key colour would blend into its neighbours).
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "RGBX")


def _decoded(data: bytes, size: int) -> Image.Image:
    """The whole picture decoded, in the file's own mode."""
    img = Image.open(io.BytesIO(data))
    if img.format == "WEBP" and _webp is not None:
        return _decoded_webp(img, data)
    if img.format in ("JPEG", "MPO"):
        # Let libjpeg decode at a reduced scale: far less work for big photos.
        img.draft("RGB", (size, size))
    img.load()
    return img


def _decoded_webp(opened: Image.Image, data: bytes) -> Image.Image:
    """The first frame of a WebP, with libwebp's canvases freed before the frame is used.

    Pillow's own `load` keeps the decoder (two full RGBA canvases) and the frame's bytes
    alive beside its copy of the pixels: 16 bytes a pixel, 374 MB for a crafted 1 KB file.
    Here the decoder goes as soon as the frame is out, and the frame's bytes become the
    image without a copy: the peak is 12 bytes a pixel, and 4 after it.
    """
    assert _webp is not None
    info, size = dict(opened.info), opened.size
    opened.close()
    decoder = _webp.WebPAnimDecoder(data)
    rawmode = decoder.get_info()[4]
    frame = decoder.get_next()
    del decoder
    if frame is None or rawmode not in ("RGBA", "RGBX"):
        raise OSError("libwebp could not decode the first frame")
    img = Image.frombuffer(rawmode, size, frame[0], "raw", rawmode, 0, 1)
    img.info.update(info)
    return img


def _reduced(img: Image.Image, size: int) -> Image.Image:
    """`img` box-reduced by a whole factor to no less than `_REDUCING_GAP` times `size`."""
    factor = max(img.size) // (size * _REDUCING_GAP)
    if factor < 2 or img.mode not in _REDUCIBLE or "transparency" in img.info:
        return img
    return img.reduce(factor)


# Pillow reads 16-bit greyscale PNGs as "I;16" (32-bit "I" in older versions), and its own
# conversion to 8 bits clips instead of scaling: 16384 of 65535 would come out white.
_WIDE_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_TO_8_BITS = tuple((v * 255 + 32767) // 65535 for v in range(65536))


def _grey_8_bit(img: Image.Image) -> Image.Image:
    """A 16-bit greyscale image scaled to 8 bits, flattened onto white where a tRNS value
    marks pixels transparent."""
    wide = img.convert("I")
    grey = wide.point(_TO_8_BITS, "L")
    transparent = img.info.get("transparency")
    if type(transparent) is not int:
        return grey.convert("RGB")
    mask = wide.point([0 if v == transparent else 255 for v in range(65536)], "L")
    flat = Image.new("RGB", grey.size, (255, 255, 255))
    flat.paste(grey.convert("RGB"), mask=mask)
    return flat


def _finish(img: Image.Image, size: int, what: str) -> PreparedImage:
    if img.mode in _WIDE_GREY:
        img = _grey_8_bit(img)
    elif img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))
    elif img.mode != "RGB":
        img = img.convert("RGB")  # also RGBX, which is how libwebp gives opaque pictures
    width, height = _scaled(img.width, img.height, size)
    if min(width, height) < MIN_SIDE:
        raise BadRequest(
            f"{what} is too small or too narrow ({width}×{height} at this size); "
            f"each side needs at least {MIN_SIDE} pixels."
        )
    if (width, height) != img.size:
        img = img.resize((width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    # Level 1: the node decodes it at once; speed matters more than a few bytes here.
    img.save(out, format="PNG", compress_level=1)
    return PreparedImage(out.getvalue(), width, height)


async def load(
    data: bytes, *, max_bytes: int, max_pixels: int, size: int, what: str, decoder: Decoder
) -> PreparedImage:
    """Check an upload cheaply on the loop, then decode and scale it on `decoder`'s threads
    (inline when tiny)."""
    check_bytes(len(data), max_bytes, what)
    header = probe(data, max_pixels, what)
    return await decoder.run(
        header.width * header.height * 3, prepare, data, size, what, memory=decode_memory(header)
    )
