"""Job requests: read a multipart or JSON body into a `RawOrder`, then check it into an
`Order` whose images are decoded and scaled (see `relay.uploads`).

Every refusal names the field and the rule, e.g. "epochs 5000 is above this relay's cap of
1000 (max_epochs)", and quotes the value only briefly. The job parameters, their ranges and
the methods they apply to are the shared table's (`protocol.params`), which nodes check
offers against too; the relay's caps (`max_size`, `max_epochs`) narrow it. A value is
admitted only if it can travel to a node (`is_param`, `is_weight`), so a job the relay
accepts can always be offered.
"""

import asyncio
import binascii
import contextlib
import io
import json
import math
import re
import reprlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from aiohttp import BodyPartReader, web
from aiohttp.hdrs import CONTENT_DISPOSITION
from aiohttp.http_exceptions import BadHttpMessage

from protocol import is_param, is_weight
from protocol.params import EPOCHS, METHODS, SIZE, TABLE, Kind, Param, ParamError
from relay import gallery
from relay.config import Config
from relay.decoding import Decoder
from relay.errors import BadRequest, TooLarge
from relay.intake import Receipt
from relay.model import Order, PreparedImage, StyleChoice
from relay.uploads import check_bytes, load, prepare

MAX_STYLES = 4
DEFAULT_EPOCHS = 200
MAX_FIELD_BYTES = 16 * 1024
MAX_PARTS = 32
# A job needs a few dozen JSON values; more commas, brackets and braces than this is no job
# (and deep nesting or a vast array would cost the parser far more than the check).
MAX_JSON_PUNCTUATION = 256
# Longer JSON numbers are out of range for every field; not converted (Python's int() is
# quadratic in the digits), only named.
MAX_NUMBER_CHARS = 64
MAX_EMAIL = 254
MAX_EMAIL_LOCAL = 64
# One plain mailbox: a dot-atom local part without what makes lists, display names, comments,
# quoting or routes (`,;:()<>[]"\`, spaces, control characters, and the `%` and `!` of old
# relay routes), at an ASCII domain of two or more labels.
_ATOM = r"[A-Za-z0-9#$&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+")
_PART_NAME = re.compile(r';\s*name="([A-Za-z0-9_\[\]-]*)"')
Check = Callable[[int, int, str], None]
"""Refuses a part of `size` bytes over `cap` (its name `what`): `check_bytes`, `_check_text`."""
_FILENAME = re.compile(r";\s*filename\*?=")
"""A part that carries a file (browsers and curl name it in the Content-Disposition)."""
# What may come before and after an image's base64: whitespace and a data: URL's head.
_B64_HEAD = re.compile(r"\s*(?:data:[\w/+.-]*;base64,)?")
_B64_TAIL = re.compile(r"\s*\Z")
# Base64 characters decoded at a time (a multiple of 4), so that no copy of a whole string
# is ever made.
B64_SLICE = 256 * 1024
# Bytes held per byte of a JSON body while it is read and parsed: the body, then its text,
# then the parsed strings beside the text, then the strings beside their decoded bytes; each
# step frees what the last one made (see `parse_json`), so at most two of them at once.
JSON_COST = 2.0
# Non-ASCII bytes a JSON job may carry: its text fields (a file name) need few, and images
# are base64. Kept few, they are escaped so the body's text stays one byte a character.
MAX_NON_ASCII = MAX_FIELD_BYTES
_NON_ASCII = re.compile(rb"[\x80-\xff]+")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# What a request may set: the public job parameters of the shared table (protocol.params),
# checked against it, and the relay's own fields.
PARAMS: dict[str, Param] = {p.name: p for p in TABLE if p.public}
FIELDS = {"method", "email", "filename", "style_weights", *PARAMS}
# Consent to the public gallery (relay.showcase): the result, and the uploaded style too.
FIELDS |= {"share", "share_style"}
DEFAULT_EPOCHS = int(EPOCHS.default)  # type: ignore[arg-type]  # the table's, an int
TRAINED_PREFIX = "fast:trained:"
"""A node's own trained style (gpu_node.fast.registry): it cannot be blended with others."""
GATYS_MULTISCALE_ABOVE = 1024
"""Gatys paints larger outputs coarse to fine, halving the long side down to this; each
scale needs at least one epoch (gpu_node.engine.gatys_params.GatysParams.epochs_per_scale)."""


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
    share: bool = False
    """Shown in the public gallery once done (`relay.showcase`); off unless asked."""
    share_style: bool = False
    """With `share`: the uploaded style image is shown too."""


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 40
_SHOWN.maxlong = 24
_SHOWN.maxlist = _SHOWN.maxdict = 3


def _shown(value: Any) -> str:
    """A value as an error message quotes it: briefly, however large it was."""
    return _SHOWN.repr(value)


# ---- reading bodies ----------------------------------------------------------------------


async def _read_part(
    part: BodyPartReader, cap: int, what: str, receipt: Receipt, check: Check = check_bytes
) -> bytes:
    # A BytesIO hands over its buffer as the bytes (getvalue), where a bytearray is copied.
    buf = io.BytesIO()
    while chunk := await part.read_chunk(64 * 1024):
        receipt.take(len(chunk))
        buf.write(chunk)
        check(buf.tell(), cap, what)
    return buf.getvalue()


def _check_text(size: int, cap: int, what: str) -> None:
    """Refuse a text field over `cap` bytes with 413 (`check_bytes` speaks of images)."""
    if size > cap:
        raise TooLarge(f"{what} is over {cap:,} bytes, the most a text field takes.")


def _part_name(part: BodyPartReader) -> str:
    """The part's field name. Read with a plain pattern: aiohttp's full RFC 6266 parser
    (`part.name`) was the largest single cost of a job (bench/relay.py); the pattern covers
    what browsers and curl send, and anything else falls back to it."""
    match = _PART_NAME.search(part.headers.get(CONTENT_DISPOSITION, ""))
    return match.group(1) if match else (part.name or "")


async def read_multipart(request: web.Request, max_bytes: int, receipt: Receipt) -> RawOrder:
    """Read a `multipart/form-data` job request, refusing any file over `max_bytes` (413)
    and a body that is not well-formed multipart (400); its bytes are counted on `receipt`
    and must arrive by its deadline."""
    try:
        async with receipt.arriving():
            return await _read_parts(request, max_bytes, receipt)
    except BadHttpMessage as error:
        # aiohttp's parser: a part's header line over its limit, a malformed header...
        reason = error.message.split(":", 1)[0] if isinstance(error.message, str) else ""
        raise BadRequest(f"A header of the multipart body is malformed ({reason}).") from None
    except ValueError as error:
        # aiohttp: no boundary in the Content-Type, the body does not start with it, or
        # the body ends before the closing boundary.
        raise BadRequest(
            f"The body is not valid multipart/form-data ({str(error)[:100]})."
        ) from None


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
            if _FILENAME.search(part.headers.get(CONTENT_DISPOSITION, "")):
                raise BadRequest(
                    f"A file was sent as field {_shown(name)}, which takes text. Send the "
                    "photo as `content` and style images as `style_image`."
                )
            what = f"Field {_shown(name)}"
            field_bytes = await _read_part(part, MAX_FIELD_BYTES, what, receipt, _check_text)
            text = field_bytes.decode("utf-8", "replace")
            if name == "style":
                raw.style_ids += [s.strip() for s in text.split(",") if s.strip()]
            elif name in ("style_weights", "style_weight[]"):
                raw.weights += [w.strip() for w in text.split(",") if w.strip()]
            elif name in raw.fields:
                raise BadRequest(f"Field {_shown(name)} is given twice; send it once.")
            else:
                raw.fields[name] = text
    return raw


def _b64(value: Any, what: str, max_bytes: int) -> bytes:
    """An image's bytes from its base64 text, decoded slice by slice: neither the text nor
    the bytes are ever copied whole."""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a base64 string.")
    start = _B64_HEAD.match(value).end()  # type: ignore[union-attr]  # it matches "" too
    tail = _B64_TAIL.search(value, max(start, len(value) - 64))
    end = tail.start() if tail is not None else len(value)
    # Base64 is 4/3 of the bytes: refuse before decoding anything too big.
    check_bytes((end - start) * 3 // 4, max_bytes, what)
    out = io.BytesIO()
    try:
        # Padding may close the last slice only; strict mode checks everything else.
        if value.find("=", start, end - 2) != -1:
            raise ValueError("padding inside")
        for at in range(start, end, B64_SLICE):
            piece = value[at : min(at + B64_SLICE, end)]
            out.write(binascii.a2b_base64(piece, strict_mode=True))
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64.") from None
    return out.getvalue()


def _entries(value: Any, key: str) -> list[tuple[Any, Any]]:
    """`x`, `[x, ...]` or `[{key: x, "weight": w}, ...]` as (x, weight or None) pairs."""
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_STYLES:
        raise BadRequest(f"At most {MAX_STYLES} styles can be blended; {len(items)} were given.")
    out: list[tuple[Any, Any]] = []
    for item in items:
        if isinstance(item, dict):
            out.append((item.get(key), item.get("weight")))
        else:
            out.append((item, None))
    return out


class _Huge:
    """A JSON number too large for any field (over MAX_NUMBER_CHARS long, or beyond a
    float), kept as text so that the field it was given for can refuse it by name."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text if len(self.text) <= 24 else f"a {len(self.text)}-character number"


def _json_int(text: str) -> int | _Huge:
    return int(text) if len(text) <= MAX_NUMBER_CHARS else _Huge(text)


def _json_float(text: str) -> float | _Huge:
    number = float(text)
    return number if math.isfinite(number) else _Huge(text)


def _json_constant(name: str) -> NoReturn:
    raise BadRequest(f"The request body contains {name}, which is not JSON; send a number.")


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, value in pairs:
        if key in body:
            raise BadRequest(f"The key {_shown(key)} appears twice in one JSON object.")
        body[key] = value
    return body


def _ascii(data: bytearray) -> bytes | bytearray:
    """`data` with each non-ASCII character as its JSON escape (`\\u00e9`), which means the
    same inside a string and is as wrong outside one. Without it, one emoji among 60 MB of
    base64 would make the whole text, and the string it is in, four bytes a character."""
    if data.isascii():
        return data
    pieces: list[bytes | memoryview] = []
    seen = last = 0
    view = memoryview(data)
    for match in _NON_ASCII.finditer(data):
        seen += match.end() - match.start()
        if seen > MAX_NON_ASCII:
            raise BadRequest(
                f"The JSON body holds more than {MAX_NON_ASCII:,} bytes of non-ASCII text; a "
                "job's text fields need far fewer (images go as base64)."
            )
        try:
            text = match.group().decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("The request body is not UTF-8; JSON must be.") from None
        pieces += [view[last : match.start()], json.dumps(text)[1:-1].encode("ascii")]
        last = match.end()
    pieces.append(view[last:])
    escaped = b"".join(pieces)
    del pieces
    view.release()
    return escaped


def _parse_json(data: bytearray) -> Any:
    """A JSON request body, strictly: UTF-8, no NaN or Infinity, no repeated keys, no deep
    nesting or vast arrays; numbers too large for any field come back as `_Huge`.

    `data` is emptied as soon as its text is made, and the text is dropped on return."""
    punctuation = data.count(b",") + data.count(b"[") + data.count(b"{")
    if punctuation > MAX_JSON_PUNCTUATION:
        raise BadRequest(
            f"The JSON body has {punctuation:,} commas, brackets and braces; a job needs far "
            f"fewer (at most {MAX_JSON_PUNCTUATION})."
        )
    escaped = _ascii(data)
    if escaped is not data:
        data.clear()  # the text is made from the escaped copy
    text = escaped.decode("ascii")
    data.clear()
    del escaped
    try:
        return json.loads(
            text,
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
            object_pairs_hook=_json_object,
        )
    except json.JSONDecodeError as error:
        raise BadRequest(
            f"The request body is not valid JSON: {error.msg} at character {error.pos}."
        ) from None
    except (ValueError, RecursionError):
        raise BadRequest("The request body is not valid JSON.") from None


async def read_json(receipt: Receipt, max_bytes: int, decoder: Decoder) -> RawOrder:
    """Read a JSON job request (images as base64), refusing any image over `max_bytes`.

    The body is counted on `receipt` at `JSON_COST` bytes a byte, what parsing it holds at
    most; parsing and base64 decoding run on `decoder`'s threads when big."""
    data = await receipt.read(JSON_COST)
    return await decoder.run(len(data), parse_json, data, max_bytes)


def parse_json(data: bytearray, max_bytes: int) -> RawOrder:
    """Parse a JSON job request body into a `RawOrder` (blocking: see `read_json`); `data`
    is emptied on the way."""
    body = _parse_json(data)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    raw = RawOrder()
    # Each base64 string is dropped as soon as it is decoded, so that the strings and the
    # images made of them are never all held at once.
    content = body.pop("image", body.pop("content", None))
    if content is not None:
        raw.content = _b64(content, "The photo", max_bytes)
    del content
    for value, weight in _entries(body.pop("style", []), "id"):
        if not isinstance(value, str):
            raise BadRequest("`style` must be a style id, a list of ids, or {id, weight} items.")
        raw.style_ids.append(value)
        raw.weights.append(weight)
    pending = deque(_entries(body.pop("style_image", []), "image"))
    while pending:
        image, weight = pending.popleft()
        raw.style_images.append(_b64(image, f"Style image {len(raw.style_images) + 1}", max_bytes))
        raw.weights.append(weight)
        del image
    given = body.pop("style_weights", None)
    if given is not None:
        if not isinstance(given, list):
            raise BadRequest("`style_weights` must be a list of numbers.")
        raw.weights = given
    raw.weights = [w for w in raw.weights if w is not None] if given is None else raw.weights
    raw.fields = body
    return raw


# ---- checking fields ---------------------------------------------------------------------


def _too_large(name: str, value: Any) -> BadRequest:
    return BadRequest(f"`{name}` is far too large ({_shown(value)}).")


def _int(name: str, value: Any, rule: str) -> int:
    """A whole number from a JSON int or a form's text that a param may hold; `rule` says
    what it must be when it is not."""
    if isinstance(value, _Huge):
        raise _too_large(name, value)
    number = None
    if type(value) is int:
        number = value
    elif type(value) is str and len(value) <= MAX_NUMBER_CHARS:
        with contextlib.suppress(ValueError):
            number = int(value.strip())
    elif type(value) is str:
        raise _too_large(name, value)
    if number is None:
        raise BadRequest(f"`{name}` must be a whole number, not {_shown(value)}.")
    if not is_param(number):
        raise BadRequest(f"`{name}` must be {rule}, not {_shown(number)}.")
    return number


def _float(name: str, value: Any) -> float:
    """A finite number from a JSON number or a form's text."""
    if isinstance(value, _Huge):
        raise _too_large(name, value)
    number = math.nan
    if type(value) in (int, float) or (type(value) is str and len(value) <= MAX_NUMBER_CHARS):
        with contextlib.suppress(ValueError, OverflowError):
            number = float(value)
    if not is_param(number):
        raise BadRequest(f"`{name}` must be a number, not {_shown(value)}.")
    return number


def _bool(name: str, value: Any) -> bool:
    """Yes or no from a JSON bool or a form's text ("true", "off", "1"...)."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if type(value) is str else str(value) if type(value) is int else ""
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise BadRequest(f"`{name}` must be true or false, not {_shown(value)}.")


def _param(param: Param, value: Any, method: str, cap: int | None = None) -> Any:
    """A parameter's value, read from JSON or a form's text and checked against the shared
    table for `method` (and `cap`, this relay's own limit, if any)."""
    name = param.name
    if not param.applies(method):
        raise BadRequest(
            f"`{name}` applies to the {' and '.join(param.methods)} method"
            f"{'s' if len(param.methods) > 1 else ''} only, not {method}."
        )
    match param.kind:
        case Kind.INTEGER:
            read: Any = _int(name, value, param.rule(method, cap))
        case Kind.NUMBER:
            read = _float(name, value)
        case Kind.BOOLEAN:
            read = _bool(name, value)
        case _:
            read = value
    try:
        return param.check(read, method, cap)
    except ParamError:
        rule = param.rule(method, cap)
        raise BadRequest(f"`{name}` must be {rule}, not {_shown(read)}.") from None


def _blend(weights: list[float]) -> list[float]:
    """The weights normalised to sum to 1, each one a weight a node can be sent."""
    if any(w <= 0 for w in weights):
        raise BadRequest("`style_weights` must all be greater than zero.")
    total = sum(weights)
    if not math.isfinite(total):
        raise BadRequest(
            "`style_weights` add up to more than a number can hold; use smaller ones, "
            "such as 0.7,0.3."
        )
    shares = [w / total for w in weights]
    for i, share in enumerate(shares):
        if not is_weight(share):
            raise BadRequest(
                f"`style_weights` are too far apart: weight {i + 1} comes to nothing beside "
                "the others."
            )
    return shares


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
    weights = _blend([_float("style_weights", w) for w in raw.weights] or [1.0] * count)
    if method == "arbitrary" and count > 1:
        raise BadRequest(
            f"The arbitrary method takes exactly one style image; {count} were given. "
            "Blend several styles with the gatys method."
        )
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
                raise BadRequest(f"Unknown style {_shown(style_id)}; see /api/styles for the list.")
            if method not in gallery.METHODS:
                raise BadRequest(
                    f"Painting styles work with the gatys or arbitrary method, not {method}."
                )
        elif style_id.startswith("fast:"):
            if style_id.removeprefix("fast:") not in fast_known:
                raise BadRequest(
                    f"Unknown style {_shown(style_id)}: no connected or recently seen node has "
                    "it; see /api/styles for the styles on offer."
                )
            if method != "fast":
                raise BadRequest(f"Style {_shown(style_id)} works only with the fast method.")
        else:
            raise BadRequest(f"Unknown style {_shown(style_id)}; see /api/styles for the list.")
    trained = [s for s in raw.style_ids if s.startswith(TRAINED_PREFIX)]
    if trained and count > 1:
        raise BadRequest(
            f"Style {_shown(trained[0])} cannot be blended: a node blends built-in styles "
            "only (fast:builtin:...); use a trained style on its own."
        )
    return tuple(StyleChoice(i, w) for i, w in zip(raw.style_ids, weights, strict=True))


def check_email(value: Any) -> str | None:
    """One plain address (trimmed), None for none; BadRequest for anything else: several
    addresses, a display name, quoting, spaces or control characters, or too long."""
    if value is None:
        return None
    address = value.strip() if type(value) is str else None
    if address is not None and (
        len(address) > MAX_EMAIL or len(address.split("@")[0]) > MAX_EMAIL_LOCAL
    ):
        raise BadRequest(
            f"The e-mail address is too long: at most {MAX_EMAIL} characters, "
            f"{MAX_EMAIL_LOCAL} before the @."
        )
    if address is None or not _EMAIL.fullmatch(address):
        raise BadRequest(
            f"The e-mail address {_shown(value)} does not look right; give one plain address "
            "like name@example.org."
        )
    return address


def check(raw: RawOrder, config: Config, fast_known: set[str]) -> Checked:
    """Check everything but the images; raise BadRequest naming the first problem."""
    fields = dict(raw.fields)
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise BadRequest(
            f"Unknown field {_shown(unknown[0])}. Known fields: image/content, style, style_image, "
            f"{', '.join(sorted(FIELDS))}."
        )
    if raw.content is None:
        raise BadRequest("No photo: send it as `content` (multipart) or `image` (JSON base64).")
    all_fast = bool(raw.style_ids) and all(s.startswith("fast:") for s in raw.style_ids)
    method = fields.get("method") or ("fast" if all_fast else "gatys")
    if type(method) is not str or (method := method.strip().lower()) not in METHODS:
        raise BadRequest(f"Unknown method {_shown(method)}; choose one of {', '.join(METHODS)}.")
    styles = _styles(raw, method, fast_known)
    paintings = tuple(p for s in styles if (p := gallery.find(s.id)) is not None)
    given = {k: v for k, v in fields.items() if k in PARAMS and v not in (None, "")}
    params: dict[str, Any] = {}
    for name, value in given.items():
        if name not in ("epochs", "size"):
            params[name] = _param(PARAMS[name], value, method)
    epochs = 1  # only gatys iterates; the others are one pass
    if method == "gatys":
        default = min(DEFAULT_EPOCHS, config.max_epochs)
        rule = EPOCHS.rule(method, config.max_epochs)
        epochs = _int("epochs", given.get("epochs", default), rule)
        if epochs > config.max_epochs:
            raise BadRequest(
                f"epochs {epochs} is above this relay's cap of {config.max_epochs} (max_epochs)."
            )
        epochs = _param(EPOCHS, epochs, method, config.max_epochs)
    elif "epochs" in given:
        _param(EPOCHS, given["epochs"], method)  # refused: it does nothing here
    top = int(SIZE.high_for(method, config.max_size))  # type: ignore[arg-type]
    # A one-pass method costs seconds at any size: without a `size` it keeps the photo's own
    # (images are never scaled up), up to the cap. Gatys costs minutes per megapixel.
    size = _param(
        SIZE, given.get("size", config.default_size if method == "gatys" else top), method, top
    )
    if method == "gatys" and epochs < (scales := gatys_scales(size)):
        raise BadRequest(
            f"A {size}-pixel Gatys painting needs at least {scales} epochs (one per scale "
            f"it is painted at), not {epochs}."
        )
    params = {"size": size, **params}
    email = check_email(fields.get("email") or None)
    filename = fields.get("filename") or None
    if filename is not None:
        if type(filename) is not str:
            raise BadRequest(f"`filename` must be text, not {_shown(filename)}.")
        # Only the last path part, and never more than a line's worth.
        filename = re.split(r"[\\/]", filename[-1000:])[-1].strip()[:200] or None
    return Checked(
        method=method,
        styles=styles,
        paintings=paintings,
        epochs=epochs,
        size=size,
        params=params,
        email=email,
        filename=filename,
        share=flag("share", fields.get("share")),
        share_style=flag("share_style", fields.get("share_style")),
    )


def gatys_scales(size: int) -> int:
    """How many scales the Gatys engine paints a `size`-pixel output at (coarse to fine)."""
    scales = 1
    while size > GATYS_MULTISCALE_ABOVE:
        size = (size + 1) // 2
        scales += 1
    return scales


def flag(name: str, value: Any) -> bool:
    """A yes/no field that is off when absent or empty."""
    return False if value in (None, "") else _bool(name, value)


def too_large_body(max_bytes: int) -> TooLarge:
    """The 413 for a request body over the total cap."""
    return TooLarge(
        f"The request is too large; each image may be at most {max_bytes / 2**20:.1f} MB."
    )


# ---- preparing a checked order's images --------------------------------------------------

PAINTING_CACHE = 32


class Paintings:
    """Gallery paintings prepared at a size, cached (the same few sizes recur)."""

    def __init__(self) -> None:
        self._prepared: dict[tuple[str, int], PreparedImage] = {}

    async def get(self, painting: gallery.Painting, size: int) -> PreparedImage:
        """`painting` prepared at `size`."""
        key = (painting.key, size)
        prepared = self._prepared.get(key)
        if prepared is None:
            data = await asyncio.to_thread(painting.image_path.read_bytes)
            prepared = await asyncio.to_thread(prepare, data, size, painting.title)
            if len(self._prepared) >= PAINTING_CACHE:
                self._prepared.pop(next(iter(self._prepared)))
            self._prepared[key] = prepared
        return prepared


PAINTINGS = web.AppKey("paintings", Paintings)


async def prepared(
    raw: RawOrder, checked: Checked, config: Config, decoder: Decoder, paintings: Paintings
) -> Order:
    """The order with its images decoded and scaled to the job's size (`relay.uploads`)."""
    assert raw.content is not None

    async def upload(data: bytes, what: str, size: int) -> PreparedImage:
        return await load(
            data,
            max_bytes=config.max_upload_bytes,
            max_pixels=config.max_pixels,
            size=size,
            what=what,
            decoder=decoder,
        )

    content = await upload(raw.content, "The photo", checked.size)
    size, params = checked.size, checked.params
    if checked.method != "gatys" and raw.fields.get("size") in (None, ""):
        # Sized by the photo (see `check`): the styles and the job's view follow it.
        size = max(content.width, content.height)
        params = {**params, "size": size}
    styles = [await upload(d, f"Style image {i + 1}", size) for i, d in enumerate(raw.style_images)]
    styles += [await paintings.get(p, size) for p in checked.paintings]
    return Order(
        method=checked.method,
        styles=checked.styles,
        content=content,
        style_images=tuple(styles),
        epochs=checked.epochs,
        params=params,
        email=checked.email,
        filename=checked.filename,
        share=checked.share,
        share_style=checked.share_style,
    )
