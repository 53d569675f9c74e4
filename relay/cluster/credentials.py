"""Node tokens and API keys in PostgreSQL, so that every replica admits the same nodes and
programs: a node that fails over to another replica is welcomed there, a key works on any.

As in the files of a single relay (`relay.tokens`, `relay.apikeys`), a row holds only the
sha256 of its secret, and a check compares against every row in constant time.

A check comes with every handshake and request and must not wait for the database, so
`verify` reads this replica's copy of the rows (`Credentials`). Every change NOTIFYs the
replicas (`CHANNEL`), which read the table again at once; and each reads it every
`REFRESH` seconds whatever it heard, in case its listening connection was down. So a
revoke counts on every replica within about a second, and while PostgreSQL is down the
copy stays as it was (nothing can be revoked then either).

`python -m relay tokens|keys ... --database-url URL` manage the rows (`TokensAt`,
`KeysAt`). A replica starting on a data dir that still holds `tokens.json` or `keys.json`
imports them (`import_files`): names the database has already are kept as they are, and
the file is renamed `*.imported`, so a record revoked later does not come back.

This module imports no database client: it is handed asyncpg pools and connections
(`asyncpg` is imported only by the command line's `_connected`).
"""

import asyncio
import contextlib
import json
import logging
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from relay.apikeys import KEYS_FILE, KeyInfo, check_key, key_info, limits_of, new_key
from relay.cluster.schema import MIGRATE_LOCK
from relay.errors import TokenError
from relay.ratelimits import Quota
from relay.tokens import (
    TOKENS_FILE,
    HashedSecrets,
    Records,
    TokenInfo,
    check_node_name,
    created_of,
    digest,
    match,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL = "stylerelay_credentials"
"""NOTIFY channel of every change (the payload is the kind that changed)."""
REFRESH = 1.0
"""Seconds between two reads of the table, NOTIFY or not."""
LOAD_TIMEOUT = 10.0
"""Seconds a read of the table may take before it counts as failed (the copy stays)."""
TOKEN, KEY = "token", "key"
_LIMITS = ("max_open", "per_minute", "per_day", "priority", "node")
"""A key's quota fields, as `relay.apikeys` records them."""

SCHEMA = f"""
SELECT pg_advisory_xact_lock({MIGRATE_LOCK});
CREATE TABLE IF NOT EXISTS credentials (
    kind text NOT NULL CHECK (kind IN ('{TOKEN}', '{KEY}')),
    name text NOT NULL,
    sha256 text NOT NULL,
    created double precision NOT NULL,
    limits jsonb NOT NULL DEFAULT '{{}}',
    PRIMARY KEY (kind, name)
);
"""
# One query string is one transaction: the advisory lock lets replicas starting together
# take turns (CREATE TABLE IF NOT EXISTS may otherwise race on the catalogue).

_ADD = f"""
WITH added AS (
    INSERT INTO credentials (kind, name, sha256, created, limits)
    VALUES ($1, $2, $3, $4, $5::text::jsonb)
    ON CONFLICT DO NOTHING
    RETURNING kind
)
SELECT pg_notify('{CHANNEL}', kind) FROM added
"""
_REMOVE = f"""
WITH gone AS (DELETE FROM credentials WHERE kind = $1 AND name = $2 RETURNING kind)
SELECT pg_notify('{CHANNEL}', kind) FROM gone
"""
_ALL = "SELECT kind, name, sha256, created, limits::text AS limits FROM credentials"


async def migrate(db: Any) -> None:
    """Create the table if it is missing (`db`: an asyncpg pool or connection)."""
    await db.execute(SCHEMA)


class Credentials:
    """This replica's copy of every token and key row, kept current (module docstring);
    `tokens` and `keys` are the stores the relay uses."""

    def __init__(self, db: Any, listener: Any | None = None, *, refresh: float = REFRESH) -> None:
        self.db = db
        """An asyncpg pool (a replica) or connection (the command line)."""
        self.listener = listener
        """An asyncpg connection to LISTEN on; None: read the table every `refresh` only."""
        self.refresh = refresh
        self.tokens = SharedTokens(self)
        self.keys = SharedKeys(self)
        self._rows: dict[str, Records] = {TOKEN: {}, KEY: {}}
        # A read of the table and a change made here take turns, so that a read begun
        # before this replica's own change cannot drop it from the copy when it ends.
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        """Create the table if missing, read it, and keep the copy current until `close`."""
        await migrate(self.db)
        await self.load()
        if self.listener is not None:
            await self.listener.add_listener(CHANNEL, self._on_notify)
        self._task = asyncio.create_task(self._keep_current(), name="credentials")

    async def close(self) -> None:
        """Stop keeping the copy current."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.listener is not None:
            with contextlib.suppress(Exception):
                await self.listener.remove_listener(CHANNEL, self._on_notify)

    def records(self, kind: str) -> Records:
        """The copy's records of `kind` (`TOKEN` or `KEY`), by name, as the files hold them."""
        return self._rows[kind]

    async def load(self) -> None:
        """Read the table into the copy."""
        async with self._lock:
            rows = await self.db.fetch(_ALL, timeout=LOAD_TIMEOUT)
            fresh: dict[str, Records] = {TOKEN: {}, KEY: {}}
            for row in rows:
                limits = json.loads(row["limits"])
                record: dict[str, object] = {"sha256": row["sha256"], "created": row["created"]}
                record.update(limits if isinstance(limits, dict) else {})
                fresh.setdefault(row["kind"], {})[row["name"]] = record
            self._rows = fresh

    async def add(self, kind: str, name: str, record: dict[str, object]) -> bool:
        """Insert `record` (`sha256`, `created` and limits) unless `name` exists; whether it
        was inserted. Every replica hears of it."""
        limits = {k: v for k, v in record.items() if k in _LIMITS}
        created = created_of(record) if "created" in record else time.time()
        sha = str(record["sha256"])
        async with self._lock:
            added = await self.db.fetch(_ADD, kind, name, sha, created, json.dumps(limits))
            if added:
                row = {"sha256": sha, "created": created, **limits}
                self._rows = {**self._rows, kind: {**self._rows[kind], name: row}}
        return bool(added)

    async def remove(self, kind: str, name: str) -> bool:
        """Delete `name`'s row; whether there was one. Every replica hears of it."""
        async with self._lock:
            gone = await self.db.fetch(_REMOVE, kind, name)
            rest = dict(self._rows[kind])
            rest.pop(name, None)
            self._rows = {**self._rows, kind: rest}
        return bool(gone)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, _payload: str) -> None:
        self._changed.set()

    async def _keep_current(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.refresh)
            # Cleared before reading: a NOTIFY during the read makes another one.
            self._changed.clear()
            try:
                await self.load()
            except Exception as exc:
                if not self._failing:
                    log.warning("node tokens and API keys could not be read again: %s", exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("node tokens and API keys are read again")
                self._failing = False


class SharedTokens:
    """Node tokens in the database: the calls of `relay.tokens.TokenStore`, with `add`,
    `list` and `revoke` awaited."""

    def __init__(self, store: Credentials) -> None:
        self.store = store

    async def add(self, name: str) -> str:
        """Create a token for a new node called `name`; return it (shown only this once)."""
        check_node_name(name)
        token = secrets.token_urlsafe(32)
        if not await self.store.add(TOKEN, name, {"sha256": digest(token), "created": time.time()}):
            raise TokenError(f"a node called {name!r} already has a token; revoke it first")
        return token

    async def list(self) -> list[TokenInfo]:
        """Every node that holds a token, by name (read from the database now)."""
        await self.store.load()
        return [
            TokenInfo(name, created_of(record))
            for name, record in sorted(self.store.records(TOKEN).items())
        ]

    async def revoke(self, name: str) -> None:
        """Remove the token of node `name`; its next connection to any replica is refused."""
        if not await self.store.remove(TOKEN, name):
            raise TokenError(f"no node called {name!r} has a token")

    def verify(self, token: str) -> str | None:
        """The name of the node holding `token`, or None if it is unknown or revoked."""
        found = match(self.store.records(TOKEN), token)
        return None if found is None else found[0]


class SharedKeys:
    """API keys in the database: the calls of `relay.apikeys.KeyStore`, with `add`, `list`
    and `revoke` awaited."""

    def __init__(self, store: Credentials) -> None:
        self.store = store

    async def add(self, name: str, quota: Quota | None = None) -> str:
        """Create a key called `name` with `quota` (none: the relay's limits); return it
        (shown only this once)."""
        quota = quota or Quota()
        check_key(name, quota)
        key = new_key()
        record = {"sha256": digest(key), "created": time.time(), **limits_of(quota)}
        if not await self.store.add(KEY, name, record):
            raise TokenError(f"a key called {name!r} exists; revoke it first")
        return key

    async def list(self) -> list[KeyInfo]:
        """Every key, by name (read from the database now)."""
        await self.store.load()
        return [key_info(name, r) for name, r in sorted(self.store.records(KEY).items())]

    async def revoke(self, name: str) -> None:
        """Remove key `name`; its next request to any replica is refused (401)."""
        if not await self.store.remove(KEY, name):
            raise TokenError(f"no key called {name!r}")

    def verify(self, key: str) -> KeyInfo | None:
        """The key's record, or None if it is unknown or revoked."""
        found = match(self.store.records(KEY), key)
        return None if found is None else key_info(*found)


# ---- a replica's start: the shared stores, and the files of a single relay -------------


@contextlib.asynccontextmanager
async def shared_credentials(
    pool: Any, listener: Any, data_dir: Path
) -> AsyncIterator[Credentials]:
    """The replica's copy of the tokens and keys, current while the block runs; the data
    dir's files imported first."""
    store = Credentials(pool, listener)
    await store.start()
    try:
        await import_files(store, data_dir)
        yield store
    finally:
        await store.close()


async def import_files(store: Credentials, data_dir: Path) -> None:
    """Copy `tokens.json` and `keys.json` of `data_dir` into the database, once: names it
    has are kept; each file is then renamed `*.imported` (module docstring)."""
    for kind, file, what in ((TOKEN, TOKENS_FILE, "node token(s)"), (KEY, KEYS_FILE, "API key(s)")):
        path = data_dir / file
        if not path.is_file():
            continue
        try:
            records = HashedSecrets(path).records()
        except TokenError as exc:
            log.error("%s was not imported into the database: %s", path, exc)
            continue
        added, kept, bad = 0, 0, 0
        for name, record in sorted(records.items()):
            sha = record.get("sha256") if isinstance(record, dict) else None
            if not isinstance(sha, str) or len(sha) != 64 or not _valid_name(name):
                bad += 1
            elif await store.add(kind, name, record):
                added += 1
            else:
                kept += 1
        done = path.with_name(path.name + ".imported")
        try:
            path.replace(done)
        except OSError as exc:
            log.error("%s could not be renamed after its import: %s", path, exc)
            done = path
        log.info(
            "imported %d %s from %s into the database (%d kept as the database had them, "
            "%d unreadable); the file is now %s",
            added,
            what,
            path,
            kept,
            bad,
            done,
        )


def _valid_name(name: str) -> bool:
    try:
        check_node_name(name)
    except TokenError:
        return False
    return True


# ---- the command line ------------------------------------------------------------------


def where(url: str) -> str:
    """The database of `url` in words, without its password (for messages)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"PostgreSQL {host}{port}{parts.path or '/'}"


def _connected(url: str, op: Callable[[Credentials], Awaitable[T]]) -> T:
    """Connect to `url`, make the table if missing, run `op` on the rows, disconnect."""

    async def run() -> T:
        import asyncpg  # noqa: PLC0415 (the cluster extra: only cluster mode needs it)

        try:
            conn = await asyncpg.connect(url, timeout=10)
        except Exception as exc:
            raise TokenError(f"cannot reach {where(url)}: {exc}") from None
        try:
            await migrate(conn)
            return await op(Credentials(conn))
        finally:
            await conn.close()

    return asyncio.run(run())


class TokensAt:
    """Node tokens in the database at `url`, for `python -m relay tokens`: the calls of
    `relay.tokens.TokenStore`, each one connecting for itself."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = where(url)
        """Where the tokens are kept, in words."""

    def add(self, name: str) -> str:
        """Create a token for a new node called `name`; return it (shown only this once)."""
        return _connected(self.url, lambda c: c.tokens.add(name))

    def list(self) -> list[TokenInfo]:
        """Every node that holds a token, by name."""
        return _connected(self.url, lambda c: c.tokens.list())

    def revoke(self, name: str) -> None:
        """Remove the token of node `name`; its next connection is refused."""
        _connected(self.url, lambda c: c.tokens.revoke(name))


class KeysAt:
    """API keys in the database at `url`, for `python -m relay keys`: the calls of
    `relay.apikeys.KeyStore`, each one connecting for itself."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = where(url)
        """Where the keys are kept, in words."""

    def add(self, name: str, quota: Quota | None = None) -> str:
        """Create a key called `name` with `quota`; return it (shown only this once)."""
        return _connected(self.url, lambda c: c.keys.add(name, quota))

    def list(self) -> list[KeyInfo]:
        """Every key, by name."""
        return _connected(self.url, lambda c: c.keys.list())

    def revoke(self, name: str) -> None:
        """Remove key `name`; its next request is refused (401)."""
        _connected(self.url, lambda c: c.keys.revoke(name))
