"""Fixtures shared by test modules: `start`, a real relay with its node port open for fake
nodes over TCP (`wire_relay.Relay`). A module that defines its own `start` uses that one.
The cluster tests' engines (a throwaway PostgreSQL and S3 store) come from `cluster_engines`;
with STYLERELAY_TEST_CLUSTER=1, `start` gives a cluster replica on them (`CLUSTER`)."""

import os
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
from cluster_replicas import replicas  # noqa: F401 (fixture)
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, make_config
from wire_relay import Relay, Start

from relay.app import init

CLUSTER = os.environ.get("STYLERELAY_TEST_CLUSTER") == "1"
"""Run the tests that use `start` against a cluster replica (a throwaway PostgreSQL and
S3 bucket) instead of a single relay: `make pytest` does so for the relay's own suites
(node link, checkpoints, live, hardening of the node port, API keys...), so one set of
tests holds both. A test of the single relay's behaviour only is marked `single_relay`."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not CLUSTER:
        return
    for item in items:
        marker = item.get_closest_marker("single_relay")
        if marker is not None:
            why = marker.args[0] if marker.args else "single relay only"
            item.add_marker(pytest.mark.skip(reason=f"single relay only: {why}"))


@pytest.fixture
async def start(
    aiohttp_client: AiohttpClient, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Start]:
    relays: list[Relay] = []
    cluster: dict[str, Any] = {}
    if CLUSTER:
        cluster = {
            "database_url": request.getfixturevalue("database_url"),
            "blob_url": request.getfixturevalue("blob_url"),
        }

    async def go(
        clock: FakeClock | None = None, timer: FakeClock | None = None, **changes: Any
    ) -> Relay:
        config = make_config(tmp_path, **{**cluster, **changes})
        app = init(config, clock or time.time, timer or time.monotonic)
        relay = Relay(await aiohttp_client(app), config.data_dir)
        relays.append(relay)
        return relay

    yield go
    for relay in relays:
        await relay.close()
