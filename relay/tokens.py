"""Node tokens: one per node, stored hashed in `<data dir>/tokens.json`.

A token is 32 random bytes, shown once when added. Only its sha256 is kept, so a leaked
data dir does not let anyone pose as a node. The file is read on every `verify`, so
`tokens revoke` takes effect for the next connection without restarting the relay.
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

from relay.errors import TokenError

TOKENS_FILE = "tokens.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class TokenInfo:
    """A node's token record, without the secret."""

    name: str
    created: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Adds, lists, revokes and verifies node tokens in a data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / TOKENS_FILE

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TokenError(f"{self.path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise TokenError(f"{self.path} should hold a JSON object")
        return data

    def _write(self, data: dict[str, dict[str, object]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        # Owner-only from the first byte: the hashes are not secrets, but the names and
        # the fact of who runs a node are nobody else's business.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, self.path)

    def add(self, name: str) -> str:
        """Create a token for a new node called `name`; return it (shown only this once)."""
        if not _NAME.match(name):
            raise TokenError(
                f"node name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-'"
            )
        data = self._read()
        if name in data:
            raise TokenError(f"a node called {name!r} already has a token; revoke it first")
        token = secrets.token_urlsafe(32)
        data[name] = {"sha256": _digest(token), "created": time.time()}
        self._write(data)
        return token

    def list(self) -> list[TokenInfo]:
        """Every node that holds a token, by name."""
        return [
            TokenInfo(name, float(record.get("created", 0.0)))  # type: ignore[arg-type]
            for name, record in sorted(self._read().items())
        ]

    def revoke(self, name: str) -> None:
        """Remove the token of node `name`; its next connection is refused."""
        data = self._read()
        if name not in data:
            raise TokenError(f"no node called {name!r} has a token")
        del data[name]
        self._write(data)

    def verify(self, token: str) -> str | None:
        """The name of the node holding `token`, or None if it is unknown or revoked."""
        digest = _digest(token)
        found: str | None = None
        # Compare against every record, so timing says nothing about which one matched.
        for name, record in self._read().items():
            if hmac.compare_digest(digest, str(record.get("sha256", ""))):
                found = name
        return found
