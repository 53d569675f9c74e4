"""Node tokens: one per node, stored hashed in `<data dir>/tokens.json`.

A token is 32 random bytes, shown once when added. Only its sha256 is kept, so a leaked
data dir does not let anyone pose as a node. The file is read again whenever it changed, so
`tokens revoke` takes effect for the next connection without restarting the relay.
`HashedSecrets` is that file; API keys (`relay.apikeys`) are kept the same way. In cluster
mode both are rows in PostgreSQL instead (`relay.cluster.credentials`), checked the same way.
"""

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from relay.errors import TokenError

TOKENS_FILE = "tokens.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class TokenInfo:
    """A node's token record, without the secret."""

    name: str
    created: float


def digest(secret: str) -> str:
    """The sha256 kept in place of a token or key."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


Records = dict[str, dict[str, object]]


class TokenCheck(Protocol):
    """What the node port asks of a token store: `TokenStore`, or the cluster's shared one
    (`relay.cluster.credentials`)."""

    def verify(self, token: str) -> str | None:
        """The name of the node holding `token`, or None if it is unknown or revoked."""


def check_node_name(name: str) -> None:
    """Refuse (`TokenError`) a node name no token may be added under."""
    if not _NAME.match(name):
        raise TokenError(
            f"node name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-'"
        )


def created_of(record: dict[str, object]) -> float:
    """When a record was added, in seconds since the epoch (0 where it does not say)."""
    created = record.get("created")
    return float(created) if isinstance(created, int | float) else 0.0


def match(records: Records, secret: str) -> tuple[str, dict[str, object]] | None:
    """The (name, record) of `records` whose hash is that of `secret`, or None."""
    wanted = digest(secret)
    found: tuple[str, dict[str, object]] | None = None
    # Compare against every record, so timing says nothing about which one matched.
    for name, record in records.items():
        if hmac.compare_digest(wanted, str(record.get("sha256", ""))):
            found = (name, record)
    return found


class HashedSecrets:
    """A JSON file of named records, each holding the sha256 of a secret (node tokens, API
    keys): read again only when it changed, written atomically and owner-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._records: Records = {}

    def _read(self) -> Records:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._records = None, {}
            return {}
        # Parsed again only when the file changed: a check may come many times a second,
        # and a revoke (which rewrites the file) still counts from the next one.
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._seen:
            return self._records
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise TokenError(f"{self.path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise TokenError(f"{self.path} should hold a JSON object")
        self._seen, self._records = stamp, data
        return data

    def _write(self, data: Records) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        # Owner-only from the first byte: the hashes are not secrets, but the names and
        # the fact of who runs a node or holds a key are nobody else's business.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, self.path)

    def _match(self, secret: str) -> tuple[str, dict[str, object]] | None:
        """The (name, record) whose hash is that of `secret`, or None."""
        return match(self._read(), secret)

    def records(self) -> Records:
        """Every record in the file, by name (a copy)."""
        return dict(self._read())


class TokenStore(HashedSecrets):
    """Adds, lists, revokes and verifies node tokens in a data dir."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir / TOKENS_FILE)

    def add(self, name: str) -> str:
        """Create a token for a new node called `name`; return it (shown only this once)."""
        check_node_name(name)
        data = dict(self._read())
        if name in data:
            raise TokenError(f"a node called {name!r} already has a token; revoke it first")
        token = secrets.token_urlsafe(32)
        data[name] = {"sha256": digest(token), "created": time.time()}
        self._write(data)
        return token

    def list(self) -> list[TokenInfo]:
        """Every node that holds a token, by name."""
        return [
            TokenInfo(name, created_of(record)) for name, record in sorted(self._read().items())
        ]

    def revoke(self, name: str) -> None:
        """Remove the token of node `name`; its next connection is refused."""
        data = dict(self._read())
        if name not in data:
            raise TokenError(f"no node called {name!r} has a token")
        del data[name]
        self._write(data)

    def verify(self, token: str) -> str | None:
        """The name of the node holding `token`, or None if it is unknown or revoked."""
        found = self._match(token)
        return None if found is None else found[0]
