"""Starting and stopping one replica's cluster service: the connections it needs.

- a pool for the queue, records and dispatcher (`--database-url`);
- a connection of its own to LISTEN on (work, cancels, job events);
- a connection of its own for the leader's advisory lock (held as long as it lives).

The last two are made again when PostgreSQL restarts (`connect`).

Connecting is retried for `CONNECT_FOR` seconds, so replicas and PostgreSQL may start in
any order (compose starts them together).
"""

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from relay.cluster.database import lost
from relay.cluster.service import ClusterService
from relay.config import Config

log = logging.getLogger(__name__)

CONNECT_FOR = 60.0
"""Seconds a starting replica waits for PostgreSQL."""


def replica_name() -> str:
    """This process's name among the replicas: host, process id, and a random tag (a
    restarted replica is a new one; the leader requeues what the old one held)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


async def _connect(make: Callable[[], Any], within: float) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await make()
        except Exception as exc:
            if not lost(exc) or loop.time() > deadline:
                raise
            log.warning("waiting for PostgreSQL: %s", exc)
            await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def cluster_service(
    config: Config, clock: Callable[[], float], timer: Callable[[], float]
) -> AsyncIterator[ClusterService]:
    """One replica's job service, joined to the cluster for as long as the block runs."""
    import asyncpg  # noqa: PLC0415 (the cluster extra: only cluster mode needs it)

    url = config.database_url
    assert url is not None
    pool = await _connect(lambda: asyncpg.create_pool(url, min_size=2, max_size=10), CONNECT_FOR)
    listener = await _connect(lambda: asyncpg.connect(url), CONNECT_FOR)
    leader = await _connect(lambda: asyncpg.connect(url), CONNECT_FOR)
    service = ClusterService(
        config,
        clock,
        timer,
        pool=pool,
        listener=listener,
        leader=leader,
        replica=replica_name(),
        connect=lambda: asyncpg.connect(url),
    )
    try:
        await service.start()
        log.info("joined the relay cluster as replica %s", service.replica)
        yield service
    finally:
        await service.leave()
        # The service's own: it made new ones if PostgreSQL restarted meanwhile.
        for conn in {listener, leader, service.listener, service.member.leader.conn}:
            with contextlib.suppress(Exception):
                await conn.close()
        with contextlib.suppress(Exception):
            await pool.close()
