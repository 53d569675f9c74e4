"""Node tokens and API keys in cluster mode: kept in PostgreSQL, so every replica admits the
same nodes and programs. Real replicas (the app) on a throwaway PostgreSQL and SeaweedFS,
the real command line in a subprocess, fake nodes over the real protocol."""

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cluster_replicas import CANDY
from relay_harness import form, png
from wire_relay import Relay

from protocol import Reject, RejectReason, Welcome
from relay.api import SERVICE
from relay.apikeys import KEYS, KeyStore
from relay.app import NODE_LISTENER
from relay.errors import TokenError
from relay.ratelimits import Quota
from relay.tokens import TokenStore

asyncpg = pytest.importorskip("asyncpg", reason="pip install 'stylerelay[cluster]'")

from relay.cluster.credentials import Credentials, SharedTokens  # noqa: E402 (after the extra's check)

Start = Callable[..., Awaitable[Relay]]
OpenCopy = Callable[..., Awaitable[Credentials]]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m relay ARGS` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def run_cli(*args: str) -> str:
    """The command's stdout; it must succeed. Run off the loop: the replicas keep serving."""
    done = await asyncio.to_thread(cli, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def handshake(relay: Relay, token: str, name: str) -> Welcome | Reject:
    """Dial `relay`'s node port, say Hello with `token`: its Welcome or Reject."""
    node = await relay.dial()
    await node.hello(token, name)
    answer = await node.next()
    assert isinstance(answer, Welcome | Reject), answer
    await node.close()
    return answer


async def refused(relay: Relay, token: str, name: str) -> bool:
    answer = await handshake(relay, token, name)
    return isinstance(answer, Reject) and answer.reason is RejectReason.BAD_TOKEN


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def heard(relay: Relay, token: str, name: str | None, timeout: float = 3.0) -> None:
    """Wait until `relay` takes `token` as node `name`'s (None: as nobody's). Asked of its
    store, not by dialling: failed handshakes would soon block the address."""

    async def holds() -> bool:
        return relay.client.app[NODE_LISTENER].tokens.verify(token) == name

    await until(holds, timeout)


def post(relay: Relay, key: str) -> Any:
    return relay.client.post(
        "/api/jobs",
        data=form(png((64, 48)), style="fast:builtin:candy", size="40"),
        headers={"Authorization": f"Bearer {key}"},
    )


async def knows_candy(relay: Relay) -> bool:
    return "builtin:candy" in relay.client.app[SERVICE].hub.known_fast


# ---- through the replicas -----------------------------------------------------------------


async def test_a_token_added_with_the_cli_admits_its_node_on_every_replica(
    replicas: Start, database_url: str
) -> None:
    a, b = await replicas("a"), await replicas("b")
    # Added while the replicas run: they hear of it, no restart.
    token = (await run_cli("tokens", "add", "roamer", "--database-url", database_url)).strip()
    listed = await run_cli("--database-url", database_url, "tokens", "list")
    assert listed.startswith("roamer\t")
    assert token not in listed
    # The node fails over from a to b (`--relay a,b`): both welcome it.
    for relay in (a, b):
        await heard(relay, token, "roamer")
        assert isinstance(await handshake(relay, token, "roamer"), Welcome)
    assert await refused(a, "not-a-token", "roamer")


async def test_a_token_revoked_with_the_cli_refuses_the_next_handshake_on_every_replica(
    replicas: Start, database_url: str
) -> None:
    token = (await run_cli("tokens", "add", "gone", "--database-url", database_url)).strip()
    a, b = await replicas("a"), await replicas("b")
    assert isinstance(await handshake(a, token, "gone"), Welcome)
    assert isinstance(await handshake(b, token, "gone"), Welcome)
    await run_cli("tokens", "revoke", "gone", "--database-url", database_url)
    # Heard through NOTIFY (a replica that missed it reads the table again within 1 s).
    for relay in (a, b):
        await heard(relay, token, None)
        assert await refused(relay, token, "gone")
    assert "gone" not in await run_cli("tokens", "list", "--database-url", database_url)


async def test_a_revoke_through_one_replica_refuses_the_node_on_another(
    replicas: Start,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    token = await a.issue("gpu-x")
    await heard(b, token, "gpu-x")
    assert isinstance(await handshake(b, token, "gpu-x"), Welcome)
    shared = a.client.app[NODE_LISTENER].tokens
    assert isinstance(shared, SharedTokens)
    await shared.revoke("gpu-x")
    await heard(b, token, None)
    assert await refused(b, token, "gpu-x")


async def test_an_api_key_added_with_the_cli_works_on_every_replica_with_its_quota(
    replicas: Start, database_url: str
) -> None:
    key = (
        await run_cli("keys", "add", "app", "--max-open", "1", "--database-url", database_url)
    ).strip()
    listed = await run_cli("keys", "list", "--database-url", database_url)
    assert listed.startswith("app\t") and "max-open 1\t" in listed
    a, b = await replicas("a"), await replicas("b")
    await b.node("gpu-b", styles=CANDY, slots=2)
    await until(lambda: knows_candy(a))
    resp = await post(a, key)
    assert resp.status == 202, await resp.text()
    # The key's own cap (1 open job), not the relay's (50), and across replicas.
    resp = await post(b, key)
    assert resp.status == 429, await resp.text()
    resp = await post(b, "sr_not-a-key")
    assert resp.status == 401
    await run_cli("keys", "revoke", "app", "--database-url", database_url)

    for relay in (a, b):

        async def forgotten(relay: Relay = relay) -> bool:
            return relay.client.app[KEYS].verify(key) is None

        await until(forgotten, timeout=3.0)
        assert (await post(relay, key)).status == 401


async def test_files_in_a_data_dir_are_imported_once(
    replicas: Start, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "a" / "data"
    old_token = TokenStore(data).add("old-node")
    clash = TokenStore(data).add("both")
    old_key = KeyStore(data).add("old-app", Quota(max_open=2, priority=1))
    # A name already in the database keeps its database token.
    kept = (await run_cli("tokens", "add", "both", "--database-url", database_url)).strip()
    with caplog.at_level(logging.INFO, logger="relay.cluster.credentials"):
        a = await replicas("a")
    # "both" is in the database already: kept there as it is.
    assert "imported 1 node token(s)" in caplog.text
    assert "1 kept" in caplog.text
    assert "imported 1 API key(s)" in caplog.text
    b = await replicas("b")
    assert isinstance(await handshake(b, old_token, "old-node"), Welcome)
    assert isinstance(await handshake(b, kept, "both"), Welcome)
    assert await refused(b, clash, "both")
    resp = await b.client.get("/api/styles", headers={"Authorization": f"Bearer {old_key}"})
    assert resp.status == 200
    info = b.client.app[KEYS].verify(old_key)
    assert info is not None and info.quota == Quota(max_open=2, priority=1)
    listed = await run_cli("tokens", "list", "--database-url", database_url)
    assert [line.split("\t")[0] for line in listed.splitlines()] == ["both", "old-node"]
    # Once: revoked in the database, it does not come back when replica a starts again.
    await run_cli("tokens", "revoke", "old-node", "--database-url", database_url)
    await a.client.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="relay.cluster.credentials"):
        again = await replicas("a")
    assert "imported" not in caplog.text
    assert await refused(again, old_token, "old-node")
    await heard(b, old_token, None)
    assert (data / "tokens.json.imported").is_file()


# ---- the store itself, two copies on one database ------------------------------------------


@pytest.fixture
async def two_copies(database_url: str) -> AsyncIterator[OpenCopy]:
    """Opens `Credentials` copies on one database, as two replicas hold them."""
    opened: list[tuple[Credentials, Any, Any]] = []

    async def go(*, listen: bool, refresh: float) -> Credentials:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        listener = await asyncpg.connect(database_url) if listen else None
        store = Credentials(pool, listener, refresh=refresh)
        await store.start()
        opened.append((store, pool, listener))
        return store

    yield go
    for store, pool, listener in opened:
        await store.close()
        if listener is not None:
            await listener.close()
        await pool.close()


async def test_a_change_reaches_another_copy_by_notify(two_copies: OpenCopy) -> None:
    # An hour between reads of the table: only the NOTIFY can tell `there` in time.
    here = await two_copies(listen=True, refresh=3600.0)
    there = await two_copies(listen=True, refresh=3600.0)
    token = await here.tokens.add("gpu-1")
    assert here.tokens.verify(token) == "gpu-1"

    async def known() -> bool:
        return there.tokens.verify(token) == "gpu-1"

    await until(known, timeout=3.0)
    await here.tokens.revoke("gpu-1")

    async def forgotten() -> bool:
        return there.tokens.verify(token) is None

    await until(forgotten, timeout=3.0)


async def test_a_copy_that_hears_no_notify_reads_the_table_again(two_copies: OpenCopy) -> None:
    here = await two_copies(listen=True, refresh=3600.0)
    deaf = await two_copies(listen=False, refresh=0.2)
    key = await here.keys.add("app", quota=None)

    async def known() -> bool:
        info = deaf.keys.verify(key)
        return info is not None and info.client == "key:app"

    await until(known, timeout=3.0)
    await here.keys.revoke("app")

    async def forgotten() -> bool:
        return deaf.keys.verify(key) is None

    await until(forgotten, timeout=3.0)


async def test_only_digests_are_stored_and_names_are_checked(
    two_copies: OpenCopy, database_url: str
) -> None:
    store = await two_copies(listen=False, refresh=3600.0)
    token = await store.tokens.add("gpu-1")
    conn = await asyncpg.connect(database_url)
    try:
        rows = [dict(r) for r in await conn.fetch("SELECT * FROM credentials")]
    finally:
        await conn.close()
    assert len(rows) == 1
    assert token not in str(rows)
    assert len(rows[0]["sha256"]) == 64
    with pytest.raises(TokenError, match="already has a token"):
        await store.tokens.add("gpu-1")
    with pytest.raises(TokenError, match="no node called"):
        await store.tokens.revoke("ghost")
    with pytest.raises(TokenError, match="not allowed"):
        await store.tokens.add("../etc/passwd")
    with pytest.raises(TokenError, match="no key called"):
        await store.keys.revoke("ghost")
    assert store.tokens.verify("not-a-token") is None


def test_cli_on_a_database_that_does_not_answer_says_so_in_one_line() -> None:
    done = cli("tokens", "list", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert done.returncode == 2
    assert done.stderr.startswith("stylerelay-relay: ")
    assert done.stderr.count("\n") == 1
