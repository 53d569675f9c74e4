"""Field checks run by every message's `__post_init__`.

They raise `LocalProtocolError`, since building a bad message is a mistake of the code that
builds it; the decoder turns that into `RemoteProtocolError` when the peer's bytes built it.
Checks compare `type(x) is ...` on purpose: `bool` is not an integer on the wire, and a `list`
is not a tuple in a frozen message.
"""

from __future__ import annotations

import math
import reprlib
from enum import Enum

from .errors import LocalProtocolError
from .limits import MAX_ID_LEN, MAX_ITEMS, MAX_TEXT_LEN, MAX_UINT, MIN_INT

# Bounded depth: a peer can nest arrays a thousand deep, deeper than repr() can recurse.
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 30
_REPR.maxother = 30


def describe(value: object) -> str:
    """Say briefly what a bad value was, for error messages."""
    text = _REPR.repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def bad(owner: object, field: str, expected: str, value: object) -> LocalProtocolError:
    """Build the error for `owner.field` not being `expected`."""
    return LocalProtocolError(
        f"{type(owner).__name__}.{field} must be {expected}, got {describe(value)}"
    )


def text(owner: object, field: str, value: object, max_len: int, *, empty: bool = False) -> None:
    """Check a string of at most `max_len` characters (non-empty unless `empty`)."""
    if type(value) is not str or len(value) > max_len or (not empty and not value):
        size = "a" if empty else "a non-empty"
        raise bad(owner, field, f"{size} string of at most {max_len} characters", value)


def ident(owner: object, field: str, value: object) -> None:
    """Check an identifier: a non-empty string of at most MAX_ID_LEN characters."""
    if type(value) is not str or not 0 < len(value) <= MAX_ID_LEN:
        raise bad(owner, field, f"a non-empty string of at most {MAX_ID_LEN} characters", value)


def uint(owner: object, field: str, value: object, *, lo: int = 0, hi: int = MAX_UINT) -> None:
    """Check an integer in [lo, hi]."""
    if type(value) is not int or not lo <= value <= hi:
        raise bad(owner, field, f"an integer in [{lo}, {hi}]", value)


def is_param(value: object) -> bool:
    """Whether `value` may be an Offer param value: a bool, a signed 64-bit int, a finite
    float, or a string of at most MAX_TEXT_LEN characters. The relay admits a job's
    parameters by this rule, so every job it accepts can be offered."""
    kind = type(value)
    if kind is int:
        return MIN_INT <= value <= MAX_UINT  # type: ignore[operator]
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if kind is str:
        return len(value) <= MAX_TEXT_LEN  # type: ignore[arg-type]
    return kind is bool


def is_weight(value: object) -> bool:
    """Whether `value` may be a style image's blend weight: a finite float above zero."""
    return type(value) is float and 0.0 < value < math.inf


def real(owner: object, field: str, value: object, *, positive: bool = False) -> None:
    """Check a finite float that is >= 0 (or > 0 when `positive`)."""
    if (
        type(value) is not float
        or not math.isfinite(value)
        or value < 0.0
        or (positive and value == 0.0)
    ):
        raise bad(owner, field, "a positive float" if positive else "a float >= 0", value)


def blob(owner: object, field: str, value: object, max_len: int = MAX_UINT) -> None:
    """Check a bytes value of at most `max_len` bytes."""
    if type(value) is not bytes or len(value) > max_len:
        raise bad(owner, field, f"bytes of at most {max_len}", value)


def code(owner: object, field: str, value: object, kind: type[Enum]) -> None:
    """Check a member of the code enum `kind`."""
    if type(value) is not kind:
        raise bad(owner, field, f"a {kind.__name__}", value)


def items(owner: object, field: str, value: object, kind: type, limit: int = MAX_ITEMS) -> None:
    """Check a tuple of at most `limit` items, each of exactly type `kind`."""
    if type(value) is not tuple or len(value) > limit:
        raise bad(owner, field, f"a tuple of at most {limit} {kind.__name__}", value)
    for item in value:
        if type(item) is not kind:
            raise bad(owner, field, f"a tuple of {kind.__name__}", item)


def job(owner: object, job_id: object, lease_id: object) -> None:
    """Check the job id and lease id that every job message carries."""
    if type(job_id) is not str or not 0 < len(job_id) <= MAX_ID_LEN:
        ident(owner, "job_id", job_id)
    if type(lease_id) is not str or not 0 < len(lease_id) <= MAX_ID_LEN:
        ident(owner, "lease_id", lease_id)
