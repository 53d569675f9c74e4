"""Relay replicas in cluster mode (the real app, in this process) on the throwaway
PostgreSQL and SeaweedFS bucket of `cluster_engines`: the `replicas` fixture
(`await replicas("a", **config changes)`), a fast style for fake nodes, and `until`."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pytest_aiohttp import AiohttpClient
from relay_harness import make_config
from wire_relay import Relay

from protocol.handshake import StyleInfo
from relay.api import SERVICE
from relay.app import init

if TYPE_CHECKING:
    from relay.cluster.service import ClusterService

Replicas = Callable[..., Awaitable[Relay]]
CANDY = (StyleInfo("builtin:candy", "Candy", "fast"),)
"""A fast style for fake nodes (`relay.node("gpu-b", styles=CANDY)`)."""


@pytest.fixture
async def replicas(
    database_url: str, blob_url: str, aiohttp_client: AiohttpClient, tmp_path: Path
) -> AsyncIterator[Replicas]:
    """Starts replicas, each on `tmp_path / name`; closed after the test. The engines are
    asked for first, so they are torn down last."""
    pytest.importorskip("asyncpg", reason="pip install 'stylerelay[cluster]'")
    started: list[Relay] = []

    async def go(name: str, **changes: Any) -> Relay:
        # Clients told apart by X-Forwarded-For (from the test, on 127.0.0.1).
        changes.setdefault("trusted_proxy", ("127.0.0.1",))
        config = make_config(
            tmp_path / name,
            database_url=database_url,
            blob_url=blob_url,
            tick_interval=0.2,
            **changes,
        )
        app = init(config, time.time, time.monotonic)
        relay = Relay(await aiohttp_client(app), config.data_dir)
        started.append(relay)
        return relay

    yield go
    for relay in started:
        await relay.close()


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Await `check()` until it answers something true (within `timeout` s); that answer."""
    async with asyncio.timeout(timeout):
        while not (found := await check()):
            await asyncio.sleep(0.05)
    return found


def service_of(relay: Relay) -> "ClusterService":
    """A replica's job service."""
    from relay.cluster.service import ClusterService

    service = relay.client.app[SERVICE]
    assert isinstance(service, ClusterService)
    return service
