"""Job requests: read a multipart or JSON body into a `RawOrder`, then check it into an
`Order` whose images are decoded and scaled (see `relay.uploads`).

Every refusal names the field and the rule, e.g. "epochs 5000 is above this relay's cap of
1000 (max_epochs)".
"""

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.hdrs import CONTENT_DISPOSITION

from relay import gallery
from relay.config import Config
from relay.decoding import Decoder
from relay.errors import BadRequest, TooLarge
from relay.intake import Receipt
from relay.model import METHODS, StyleChoice
from relay.uploads import check_bytes

MAX_STYLES = 4
DEFAULT_EPOCHS = 200
MAX_FIELD_BYTES = 16 * 1024
MAX_PARTS = 32
# A job request is a few fields and images (base64 strings hold no `,:[{`): a body with more
# structure than this is refused before parsing, which would hold the GIL for seconds.
MAX_JSON_TOKENS = 1000
_EMAIL = re.compile(r"^[^@\s<>\"]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_PART_NAME = re.compile(r';\s*name="([A-Za-z0-9_\[\]-]*)"')
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# Parameters passed on to the node's engine, with how to read them. The engine applies its
# own defaults for any it is not given.
PARAMS: dict[str, str] = {
    "content_weight": "weight",
    "style_weight": "weight",
    "tv_weight": "weight",
    "strength": "fraction",
    "learning_rate": "weight",
    "keep_colors": "bool",
    "optimizer": "choice:lbfgs,adam",
    "seed": "int",
}
FIELDS = {"method", "epochs", "size", "email", "filename", "style_weights", *PARAMS}


@dataclass
class RawOrder:
    """A request body as read: image bytes and text fields, nothing checked yet."""

    content: bytes | None = None
    style_ids: list[str] = field(default_factory=list)
    style_images: list[bytes] = field(default_factory=list)
    weights: list[Any] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Checked:
    """The parts of an order that need no image decoding, all checked."""

    method: str
    styles: tuple[StyleChoice, ...]
    paintings: tuple[gallery.Painting, ...]
    epochs: int
    size: int
    params: dict[str, Any]
    email: str | None
    filename: str | None


# ---- reading bodies ----------------------------------------------------------------------


async def _read_part(part: BodyPartReader, cap: int, what: str, receipt: Receipt) -> bytes:
    buf = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        receipt.take(len(chunk))
        buf += chunk
        check_bytes(len(buf), cap, what)
    return bytes(buf)


def _part_name(part: BodyPartReader) -> str:
    """The part's field name. Read with a plain pattern: aiohttp's full RFC 6266 parser
    (`part.name`) was the largest single cost of a job (bench/relay.py); the pattern covers
    what browsers and curl send, and anything else falls back to it."""
    match = _PART_NAME.search(part.headers.get(CONTENT_DISPOSITION, ""))
    return match.group(1) if match else (part.name or "")


async def read_multipart(request: web.Request, max_bytes: int, receipt: Receipt) -> RawOrder:
    """Read a `multipart/form-data` job request, refusing any file over `max_bytes` (413);
    its bytes are counted on `receipt` and must arrive by its deadline."""
    async with receipt.arriving():
        return await _read_parts(request, max_bytes, receipt)


async def _read_parts(request: web.Request, max_bytes: int, receipt: Receipt) -> RawOrder:
    raw = RawOrder()
    reader = await request.multipart()
    parts = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise BadRequest("Nested multipart bodies are not supported.")
        # Each part is capped; capping their number bounds the whole body, chunked or not.
        parts += 1
        if parts > MAX_PARTS:
            raise BadRequest(f"Too many form fields; at most {MAX_PARTS} are read.")
        name = _part_name(part)
        if name in ("content", "image"):
            if raw.content is not None:
                raise BadRequest("Send one photo per job.")
            raw.content = await _read_part(part, max_bytes, "The photo", receipt)
        elif name == "style_image":
            if len(raw.style_images) == MAX_STYLES:
                raise BadRequest(f"At most {MAX_STYLES} styles can be blended.")
            what = f"Style image {len(raw.style_images) + 1}"
            raw.style_images.append(await _read_part(part, max_bytes, what, receipt))
        else:
            field_bytes = await _read_part(part, MAX_FIELD_BYTES, f"Field {name!r}", receipt)
            text = field_bytes.decode("utf-8", "replace")
            if name == "style":
                raw.style_ids += [s.strip() for s in text.split(",") if s.strip()]
            elif name in ("style_weights", "style_weight[]"):
                raw.weights += [w.strip() for w in text.split(",") if w.strip()]
            else:
                raw.fields[name] = text
    return raw


def _b64(value: Any, what: str, max_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a base64 string.")
    text = _DATA_URL.sub("", value.strip(), count=1)
    # Base64 is 4/3 of the bytes: refuse before decoding anything too big.
    check_bytes(len(text) * 3 // 4, max_bytes, what)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64.") from None


def _entries(value: Any, key: str) -> list[tuple[Any, Any]]:
    """`x`, `[x, ...]` or `[{key: x, "weight": w}, ...]` as (x, weight or None) pairs."""
    items = value if isinstance(value, list) else [value]
    out: list[tuple[Any, Any]] = []
    for item in items:
        if isinstance(item, dict):
            out.append((item.get(key), item.get("weight")))
        else:
            out.append((item, None))
    return out


async def read_json(receipt: Receipt, max_bytes: int, decoder: Decoder) -> RawOrder:
    """Read a JSON job request (images as base64), refusing any image over `max_bytes`.

    The body is counted on `receipt`; parsing and base64 decoding run on `decoder`'s threads
    when big."""
    data = await receipt.read()
    return await decoder.run(len(data), parse_json, data, max_bytes)


def parse_json(data: bytes, max_bytes: int) -> RawOrder:
    """Parse a JSON job request body into a `RawOrder` (blocking: see `read_json`)."""
    tokens = sum(data.count(c) for c in (b",", b":", b"[", b"{"))
    if tokens > MAX_JSON_TOKENS:
        raise BadRequest(
            f"The JSON body has {tokens:,} items; a job request has a few fields and images "
            f"(at most {MAX_JSON_TOKENS:,} items)."
        )
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    raw = RawOrder()
    content = body.pop("image", body.pop("content", None))
    if content is not None:
        raw.content = _b64(content, "The photo", max_bytes)
    for value, weight in _entries(body.pop("style", []), "id"):
        if not isinstance(value, str):
            raise BadRequest("`style` must be a style id, a list of ids, or {id, weight} items.")
        raw.style_ids.append(value)
        raw.weights.append(weight)
    for i, (value, weight) in enumerate(_entries(body.pop("style_image", []), "image")):
        raw.style_images.append(_b64(value, f"Style image {i + 1}", max_bytes))
        raw.weights.append(weight)
    given = body.pop("style_weights", None)
    if given is not None:
        if not isinstance(given, list):
            raise BadRequest("`style_weights` must be a list of numbers.")
        raw.weights = given
    raw.weights = [w for w in raw.weights if w is not None] if given is None else raw.weights
    raw.fields = body
    return raw


# ---- checking fields ---------------------------------------------------------------------


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise BadRequest(f"`{name}` must be a whole number, not {value!r}.")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise BadRequest(f"`{name}` must be a whole number, not {value!r}.") from None
    return number


def _float(name: str, value: Any) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise BadRequest(f"`{name}` must be a number, not {value!r}.")
    return number


def _param(name: str, kind: str, value: Any) -> Any:
    match kind.split(":"):
        case ["weight"]:
            number = _float(name, value)
            if number < 0:
                raise BadRequest(f"`{name}` must be zero or more, not {number}.")
            return number
        case ["fraction"]:
            number = _float(name, value)
            if not 0 <= number <= 1:
                raise BadRequest(f"`{name}` must be between 0 and 1, not {number}.")
            return number
        case ["int"]:
            return _int(name, value)
        case ["bool"]:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise BadRequest(f"`{name}` must be true or false, not {value!r}.")
        case ["choice", options]:
            if str(value) not in options.split(","):
                raise BadRequest(f"`{name}` must be one of {options.replace(',', ', ')}.")
            return str(value)
    raise AssertionError(kind)


def _styles(raw: RawOrder, method: str, fast_known: set[str]) -> tuple[StyleChoice, ...]:
    count = len(raw.style_ids) + len(raw.style_images)
    if raw.style_ids and raw.style_images:
        raise BadRequest("Give either `style` ids or `style_image` uploads, not both.")
    if count == 0:
        raise BadRequest(
            "Choose a style: give `style` (an id from /api/styles) or upload a `style_image`."
        )
    if count > MAX_STYLES:
        raise BadRequest(f"At most {MAX_STYLES} styles can be blended; {count} were given.")
    if raw.weights and len(raw.weights) != count:
        raise BadRequest(f"{len(raw.weights)} style weights were given for {count} styles.")
    weights = [_float("style_weights", w) for w in raw.weights] or [1.0] * count
    if any(w <= 0 for w in weights):
        raise BadRequest("Style weights must be greater than zero.")
    total = sum(weights)
    weights = [w / total for w in weights]
    if raw.style_images:
        if method == "fast":
            raise BadRequest(
                "The fast method uses built-in styles only; upload your own style image "
                "with the gatys or arbitrary method."
            )
        return tuple(StyleChoice("upload", w) for w in weights)
    for style_id in raw.style_ids:
        if style_id.startswith(gallery.PREFIX):
            if gallery.find(style_id) is None:
                raise BadRequest(f"Unknown style {style_id!r}; see /api/styles for the list.")
            if method not in gallery.METHODS:
                raise BadRequest(
                    f"Painting styles work with the gatys or arbitrary method, not {method}."
                )
        elif style_id.startswith("fast:"):
            if style_id.removeprefix("fast:") not in fast_known:
                raise BadRequest(f"Unknown style {style_id!r}; see /api/styles for the list.")
            if method != "fast":
                raise BadRequest(f"Style {style_id!r} works only with the fast method.")
        else:
            raise BadRequest(f"Unknown style {style_id!r}; see /api/styles for the list.")
    return tuple(StyleChoice(i, w) for i, w in zip(raw.style_ids, weights, strict=True))


def check(raw: RawOrder, config: Config, fast_known: set[str]) -> Checked:
    """Check everything but the images; raise BadRequest naming the first problem."""
    fields = dict(raw.fields)
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise BadRequest(
            f"Unknown field {unknown[0]!r}. Known fields: image/content, style, style_image, "
            f"{', '.join(sorted(FIELDS))}."
        )
    if raw.content is None:
        raise BadRequest("No photo: send it as `content` (multipart) or `image` (JSON base64).")
    all_fast = bool(raw.style_ids) and all(s.startswith("fast:") for s in raw.style_ids)
    method = str(fields.get("method") or ("fast" if all_fast else "gatys")).strip().lower()
    if method not in METHODS:
        raise BadRequest(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    styles = _styles(raw, method, fast_known)
    paintings = tuple(p for s in styles if (p := gallery.find(s.id)) is not None)
    epochs = _int("epochs", fields.get("epochs", min(DEFAULT_EPOCHS, config.max_epochs)))
    if epochs < 1:
        raise BadRequest(f"`epochs` must be at least 1, not {epochs}.")
    if epochs > config.max_epochs:
        raise BadRequest(
            f"epochs {epochs} is above this relay's cap of {config.max_epochs} (max_epochs)."
        )
    size = _int("size", fields.get("size", config.default_size))
    if not 16 <= size <= config.max_size:
        raise BadRequest(f"`size` must be between 16 and {config.max_size} pixels, not {size}.")
    params: dict[str, Any] = {"size": size}
    for name, kind in PARAMS.items():
        if fields.get(name) not in (None, ""):
            params[name] = _param(name, kind, fields[name])
    email = fields.get("email") or None
    if email is not None and (not isinstance(email, str) or not _EMAIL.match(email.strip())):
        raise BadRequest(f"The e-mail address {email!r} does not look right.")
    filename = fields.get("filename") or None
    if filename is not None:
        # Only the last path part, and never more than a line's worth.
        filename = re.split(r"[\\/]", str(filename))[-1].strip()[:200] or None
    return Checked(
        method=method,
        styles=styles,
        paintings=paintings,
        # Only gatys iterates; the others are one pass, whatever was asked.
        epochs=epochs if method == "gatys" else 1,
        size=size,
        params=params,
        email=email.strip() if email else None,
        filename=filename,
    )


def too_large_body(max_bytes: int) -> TooLarge:
    """The 413 for a request body over the total cap."""
    return TooLarge(
        f"The request is too large; each image may be at most {max_bytes / 2**20:.1f} MB."
    )
