"""API keys: a program's own identity, with its own quotas, stored hashed in
`<data dir>/keys.json`.

A key is 32 random bytes, shown once when added; only its sha256 is kept (as with node
tokens, `relay.tokens`). A request with `Authorization: Bearer KEY` is the client
`key:NAME`, with the key's limits where it sets them and the relay's otherwise; a bad or
revoked key is refused (401), never served as anonymous. The file is read again when it
changes, so `keys revoke` takes effect on the next request without a restart.
"""

import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from relay.errors import Busy, TokenError, Unauthorized
from relay.ratelimits import Quota
from relay.tokens import HashedSecrets, created_of, digest

log = logging.getLogger(__name__)

KEYS_FILE = "keys.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class KeyInfo:
    """An API key's record, without the secret."""

    name: str
    created: float
    quota: Quota

    @property
    def client(self) -> str:
        """The client key its requests count under (beside `relay.clients`' addresses)."""
        return f"key:{self.name}"


def _quota(record: dict[str, object]) -> Quota:
    def number(name: str) -> int | None:
        value = record.get(name)
        return value if isinstance(value, int) else None

    node = record.get("node")
    return Quota(
        number("max_open"),
        number("per_minute"),
        number("per_day"),
        number("priority") or 0,
        node if isinstance(node, str) else None,
    )


def key_info(name: str, record: dict[str, object]) -> KeyInfo:
    """The `KeyInfo` a stored record (a file's or the database's) stands for."""
    return KeyInfo(name, created_of(record), _quota(record))


def check_key(name: str, quota: Quota) -> None:
    """Refuse (`TokenError`) a name or quota no key may be added with."""
    if not _NAME.match(name):
        raise TokenError(
            f"key name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-'"
        )
    if quota.node is not None and not _NAME.match(quota.node):
        raise TokenError(f"node name {quota.node!r} is not a node token's name")
    for field, value in asdict(quota).items():
        if field == "node":
            continue
        if value is not None and value < (0 if field == "priority" else 1):
            raise TokenError(f"--{field.replace('_', '-')} must be at least 1 (0 for priority)")


def new_key() -> str:
    """A fresh API key (its `sr_` prefix tells it from a node token at a glance)."""
    return "sr_" + secrets.token_urlsafe(32)


def limits_of(quota: Quota) -> dict[str, object]:
    """The quota's fields that are set, as a record keeps them."""
    return {k: v for k, v in asdict(quota).items() if v is not None}


class KeyCheck(Protocol):
    """What the API asks of a key store: `KeyStore`, or the cluster's shared one
    (`relay.cluster.credentials`)."""

    def verify(self, key: str) -> KeyInfo | None:
        """The key's record, or None if it is unknown or revoked."""


class KeyStore(HashedSecrets):
    """Adds, lists, revokes and verifies API keys in a data dir."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir / KEYS_FILE)

    def add(self, name: str, quota: Quota | None = None) -> str:
        """Create a key called `name` with `quota` (none: the relay's limits); return it
        (shown only this once)."""
        quota = quota or Quota()
        check_key(name, quota)
        data = dict(self._read())
        if name in data:
            raise TokenError(f"a key called {name!r} exists; revoke it first")
        key = new_key()
        data[name] = {"sha256": digest(key), "created": time.time(), **limits_of(quota)}
        self._write(data)
        return key

    def list(self) -> list[KeyInfo]:
        """Every key, by name."""
        return [key_info(name, record) for name, record in sorted(self._read().items())]

    def revoke(self, name: str) -> None:
        """Remove key `name`; its next request is refused (401)."""
        data = dict(self._read())
        if name not in data:
            raise TokenError(f"no key called {name!r}")
        del data[name]
        self._write(data)

    def verify(self, key: str) -> KeyInfo | None:
        """The key's record, or None if it is unknown or revoked."""
        found = self._match(key)
        return None if found is None else key_info(*found)


KEYS: web.AppKey[KeyCheck] = web.AppKey("api_keys")
"""The app's API keys: `KeyStore` on one relay, the shared keys in cluster mode."""
KEY = web.RequestKey("api_key", KeyInfo)
"""Where `identify` leaves a request's verified `KeyInfo`."""


@web.middleware
async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Verify `Authorization: Bearer KEY`, if sent: a good key rides on the request, a bad
    one is refused (401) before anything else is done for it. Other schemes are not ours
    (a proxy's Basic auth in front of /status passes them on) and are left alone."""
    scheme, _, key = request.headers.get(hdrs.AUTHORIZATION, "").strip().partition(" ")
    if scheme.lower() == "bearer":
        if not key.strip():
            raise Unauthorized("Send an API key as 'Authorization: Bearer KEY'.")
        try:
            info = request.app[KEYS].verify(key.strip())
        except TokenError as exc:
            # The operator's keys file is damaged: no key can be checked, and guessing
            # would either lock everyone out for good or let anyone in.
            log.error("API keys cannot be checked: %s", exc)
            raise Busy(
                "API keys cannot be checked right now; the relay's operator has been told. "
                "Try again later.",
                60,
            ) from None
        if info is None:
            raise Unauthorized("Unknown or revoked API key.")
        request[KEY] = info
    return await handler(request)


def key_of(request: web.Request) -> KeyInfo | None:
    """The verified API key the request came with, if any."""
    return request.get(KEY)
