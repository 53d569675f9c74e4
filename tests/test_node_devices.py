"""Several devices behind one daemon: one token, one connection, `slots` jobs per device,
jobs spread over the devices, and each device listed in Hello and in /api/nodes.

A CPU stands in for each GPU (`--device cpu,cpu`): the code paths are the same.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
import torch
from aiohttp.test_utils import TestClient
from daemon_helpers import fake_relay, png
from fast_helpers import one_thread
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, make_config

from gpu_node.daemon.capabilities import build_capabilities
from gpu_node.daemon.config import ConfigError, NodeConfig
from gpu_node.daemon.daemon import Daemon, create_daemon
from gpu_node.daemon.devices import DeviceRunners
from gpu_node.daemon.params import NodeCaps
from gpu_node.daemon.runner import JobRunner
from gpu_node.device import resolve_devices
from gpu_node.errors import BadInputError
from gpu_node.fast.registry import build_registry
from protocol import (
    PROTOCOL_VERSION,
    Accept,
    Capabilities,
    Connection,
    DeviceInfo,
    Failure,
    Hello,
    LocalProtocolError,
    Message,
    Offer,
    Progress,
    Result,
    Role,
    StyleImage,
)
from protocol.codec import decode, encode
from relay.api import SERVICE
from relay.app import init
from relay.nodewire import node_info

CPU = torch.device("cpu")
CONFIG = NodeConfig(
    relay_host="127.0.0.1",
    relay_port=1,
    token="node-token",
    name="two-gpus",
    device="cpu,cpu",
    max_epochs=50,
    max_pixels=200_000,
    backoff_min=0.05,
    backoff_max=0.2,
)
TWO = (DeviceInfo("GPU A", 80 << 30, 2), DeviceInfo("GPU B", 24 << 30, 1))


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


# ---- the device list ---------------------------------------------------------------------


def test_a_device_list_gives_one_entry_per_device_and_all_falls_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert resolve_devices("cpu,cpu") == [CPU, CPU]
    assert resolve_devices(" cpu ") == [CPU]
    if not torch.cuda.is_available():
        with caplog.at_level(logging.INFO, logger="gpu_node.device"):
            assert len(resolve_devices("all")) == 1
        assert "no CUDA device" in caplog.text
    with pytest.raises(BadInputError, match="empty entry"):
        resolve_devices("cpu,,cpu")
    with pytest.raises(BadInputError, match="not available"):
        resolve_devices("cpu,cuda:63")


# ---- the protocol ------------------------------------------------------------------------


def _hello(devices: tuple[DeviceInfo, ...]) -> Hello:
    caps = Capabilities("2 x GPU", 104 << 30, ("gatys",), (), 1000, 2**22, 3, (), devices)
    return Hello((PROTOCOL_VERSION,), "n", "t", "test", caps)


def _no_binaries(data: bytes) -> tuple[int, str]:
    raise AssertionError("a hello carries no transfers")


def _no_transfers(transfer: object) -> Any:
    raise AssertionError("a hello carries no transfers")


def _wire(body: dict[str, Any]) -> dict[str, Any]:
    """`body` as a receiver sees it after msgpack (tuples become arrays)."""
    decoded: dict[str, Any] = msgpack.unpackb(msgpack.packb(body))
    return decoded


def test_hello_carries_the_devices_and_leaves_the_key_out_without_them() -> None:
    for devices in (TWO, ()):
        body = _wire(encode(_hello(devices), _no_binaries))
        assert ("devices" in body["capabilities"]) == bool(devices)
        assert decode(body, _no_transfers) == _hello(devices)
        relay = Connection(Role.RELAY)
        assert relay.receive_data(Connection(Role.NODE).send(_hello(devices))) == [_hello(devices)]


def test_receivers_ignore_keys_they_do_not_know_in_a_device() -> None:
    body = _wire(encode(_hello(TWO), _no_binaries))
    body["capabilities"]["devices"][0]["uuid"] = "GPU-1234"
    assert decode(body, _no_transfers) == _hello(TWO)


@pytest.mark.parametrize(
    ("name", "memory", "slots"), [("", 1, 1), ("GPU", -1, 1), ("GPU", 1, 0), ("GPU", 1, 257)]
)
def test_an_unusable_device_entry_is_refused(name: str, memory: int, slots: int) -> None:
    with pytest.raises(LocalProtocolError):
        DeviceInfo(name, memory, slots)


# ---- the relay's view --------------------------------------------------------------------


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path) -> TestClient[Any, Any]:
    clock = FakeClock()
    return await aiohttp_client(init(make_config(tmp_path), clock, clock))


async def test_api_nodes_shows_each_device(client: TestClient[Any, Any]) -> None:
    service = client.app[SERVICE]
    info = node_info("two-gpus", _hello(TWO))
    FakeNode.connect(service, "two-gpus", **{k: getattr(info, k) for k in ("devices", "slots")})
    FakeNode.connect(service, "older", device_name="Old GPU", device_memory=8 << 30)
    nodes = {n["name"]: n for n in (await (await client.get("/api/nodes")).json())["nodes"]}
    assert nodes["two-gpus"]["devices"] == [
        {"name": "GPU A", "memory": 80 << 30, "slots": 2},
        {"name": "GPU B", "memory": 24 << 30, "slots": 1},
    ]
    # a node that lists no devices is its one device
    assert nodes["older"]["devices"] == [{"name": "Old GPU", "memory": 8 << 30, "slots": 1}]


# ---- the daemon --------------------------------------------------------------------------


def _pool(slots: int = 1) -> DeviceRunners:
    ticks = itertools.count()  # a second per reading: every Progress passes the throttle
    runners = [
        JobRunner(
            NodeCaps(CONFIG.max_epochs, CONFIG.max_pixels),
            build_registry(None),
            CPU,
            clock=lambda: float(next(ticks)),
        )
        for _ in range(2)
    ]
    return DeviceRunners(runners, slots)


def test_hello_lists_each_device_and_counts_slots_per_device() -> None:
    pool = _pool()
    config = replace(CONFIG, slots=3)
    caps = build_capabilities(config, pool.first.registry, CPU, ("gatys",), devices=pool.devices)
    assert [d.slots for d in caps.devices] == [3, 3] and caps.slots == 6
    assert caps.device_name.startswith("2 x CPU")
    assert caps.device_memory == 2 * caps.devices[0].memory


def _offer(n: int) -> Offer:
    style = (StyleImage(png("starry_night.jpg", 40)),)
    params = {"epochs": 8, "size": 48}
    return Offer(f"job-{n}", f"lease-{n}", "gatys", params, None, style, png())  # type: ignore[arg-type]


async def test_one_connection_runs_a_job_on_each_device_at_once() -> None:
    pool = _pool(slots=1)
    pool.warm_up()  # the daemon's own warm-up then holds no worker thread for long
    async with fake_relay() as relay:
        config = replace(CONFIG, relay_port=relay.port)
        caps = build_capabilities(config, pool.first.registry, CPU, pool.methods,
                                  devices=pool.devices)  # fmt: skip
        daemon = Daemon(config, caps, pool, rng=random.Random(0))
        task = asyncio.create_task(daemon.serve())
        try:
            side = await relay.next_session()
            assert side.hello is not None and len(side.hello.capabilities.devices) == 2
            side.send(_offer(1))
            side.send(_offer(2))  # with one slot per device, only a second device takes it
            seen: list[Message] = []
            while sum(isinstance(m, Result | Failure) for m in seen) < 2:
                message = await side.next(60)
                assert message is not None
                seen.append(message)
        finally:
            daemon.drain()
            await asyncio.wait_for(task, 30)
    assert len(relay.hellos) == 1 and daemon.connections == 1
    assert sum(isinstance(m, Accept) for m in seen) == 2
    assert all(isinstance(m, Result) for m in seen if isinstance(m, Result | Failure))
    assert [lane.started for lane in pool.lanes] == [1, 1]
    # the jobs overlapped: the second reported progress before the first finished
    first_end = next(i for i, m in enumerate(seen) if isinstance(m, Result))
    finished = seen[first_end].job_id  # type: ignore[union-attr]
    other = "job-2" if finished == "job-1" else "job-1"
    assert any(isinstance(m, Progress) and m.job_id == other for m in seen[:first_end])


def test_jobs_go_to_the_least_busy_device() -> None:
    pool = _pool(slots=2)
    taken = [pool._take() for _ in range(4)]
    assert [pool.lanes.index(lane) for lane in taken] == [0, 1, 0, 1]
    assert [lane.running for lane in pool.lanes] == [2, 2]


@pytest.mark.slow
def test_create_daemon_builds_one_runner_per_device() -> None:
    config = replace(CONFIG, slots=2, device="cpu,cpu")
    daemon = create_daemon(config)
    assert isinstance(daemon.runner, DeviceRunners)
    assert daemon.runner.devices == [CPU, CPU]
    assert [d.slots for d in daemon.capabilities.devices] == [2, 2]
    assert daemon.capabilities.slots == 4


def test_more_slots_than_the_protocol_allows_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="lower --slots"):
        create_daemon(replace(CONFIG, slots=64, device="cpu,cpu,cpu,cpu,cpu"))
