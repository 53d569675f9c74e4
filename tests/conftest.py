"""Fixtures shared by test modules: `start`, a real relay with its node port open for fake
nodes over TCP (`wire_relay.Relay`). A module that defines its own `start` uses that one.
The cluster tests' engines (a throwaway PostgreSQL and S3 store) come from `cluster_engines`."""

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cluster_engines import (  # noqa: F401 (fixtures)
    blob_url,
    database_url,
    postgres_server,
    s3_credentials,
    s3_server,
)
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, make_config
from wire_relay import Relay, Start

from relay.app import init


@pytest.fixture
async def start(aiohttp_client: AiohttpClient, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Start]:
    relays: list[Relay] = []
    import os
    if os.environ.get("XCLUSTER"):
        changes0 = {"database_url": request.getfixturevalue("database_url"), "blob_url": request.getfixturevalue("blob_url")}
    else:
        changes0 = {}

    async def go(
        clock: FakeClock | None = None, timer: FakeClock | None = None, **changes: Any
    ) -> Relay:
        config = make_config(tmp_path, **{**changes0, **changes})
        app = init(config, clock or time.time, timer or time.monotonic)
        relay = Relay(await aiohttp_client(app), config.data_dir)
        relays.append(relay)
        return relay

    yield go
    for relay in relays:
        await relay.close()
