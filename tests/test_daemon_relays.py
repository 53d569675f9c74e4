"""A node given several relay addresses (replicas): `--relay a:5678,b:5678` parses into
the addresses, and the real daemon moves to the next real relay when one goes away."""

import argparse
import asyncio
import random
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from wire_relay import Relay, Start

from gpu_node.daemon.capabilities import build_capabilities
from gpu_node.daemon.config import ConfigError, NodeConfig, add_arguments, from_args
from gpu_node.daemon.daemon import Daemon
from gpu_node.daemon.params import NodeCaps
from gpu_node.daemon.runner import JobRunner
from gpu_node.fast.registry import build_registry
from relay.tokens import TOKENS_FILE

CONFIG = NodeConfig(
    relay_host="127.0.0.1",
    relay_port=1,
    token="unset",
    name="roamer",
    device="cpu",
    backoff_min=0.05,
    backoff_max=0.2,
    drain_grace=5.0,
)


def parse(relay: str) -> NodeConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(["--relay", relay, "--token", "t"]), {})


def test_several_addresses_are_tried_in_the_order_given() -> None:
    config = parse("a.example:7000, b.example ,[::1]:7001")
    assert config.relays == (("a.example", 7000), ("b.example", 5678), ("::1", 7001))
    assert (config.relay_host, config.relay_port) == ("a.example", 7000)


def test_tls_on_every_address_dials_them_all_over_tls() -> None:
    config = parse("tls://a.example,tls://b.example:6000")
    assert config.tls
    assert config.label(*config.relays[1]) == "tls://b.example:6000"


@pytest.mark.parametrize(
    ("relay", "error"),
    [
        ("tls://a.example,b.example", "tls:// on every address"),
        ("a.example,http://b.example", "not http://"),
        ("a.example,b.example:99999", "port must be"),
        (" , ", "no relay"),
    ],
)
def test_a_bad_address_list_says_what_is_wrong(relay: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse(relay)


@pytest.fixture(scope="module")
def runner() -> JobRunner:
    return JobRunner(
        NodeCaps(CONFIG.max_epochs, CONFIG.max_pixels), build_registry(None), torch.device("cpu")
    )


async def _serve(config: NodeConfig, runner: JobRunner) -> AsyncIterator[Daemon]:
    caps = build_capabilities(config, runner.registry, runner.device, runner.methods)
    daemon = Daemon(config, caps, runner, rng=random.Random(0))
    task = asyncio.create_task(daemon.serve())
    try:
        yield daemon
    finally:
        daemon.drain()
        assert await asyncio.wait_for(task, 30) == 0


async def _shown_on(relay: Relay, name: str) -> None:
    async with asyncio.timeout(20):
        while name not in [n["name"] for n in await relay.nodes()]:
            await asyncio.sleep(0.05)


async def _two_relays(start: Start, tmp_path: Path) -> tuple[Relay, Relay, str]:
    """Two real relays that know one node token (as replicas share their tokens)."""
    first = await start(data_dir=tmp_path / "a")
    second = await start(data_dir=tmp_path / "b")
    token = first.tokens.add("roamer")
    shutil.copy(tmp_path / "a" / TOKENS_FILE, tmp_path / "b" / TOKENS_FILE)
    return first, second, token


@pytest.mark.single_relay(
    "each relay issues its own token for the node; a cluster's replicas share one"
)
async def test_the_node_moves_to_the_next_relay_when_its_relay_goes_away(
    start: Start, tmp_path: Path, runner: JobRunner
) -> None:
    first, second, token = await _two_relays(start, tmp_path)
    config = replace(
        CONFIG, token=token, relay_port=first.port, more_relays=(("127.0.0.1", second.port),)
    )
    async for daemon in _serve(config, runner):
        await _shown_on(first, "roamer")
        assert daemon.connections == 1
        await first.client.close()  # the first relay stops; its node port closes
        await _shown_on(second, "roamer")
        assert daemon.connections == 2


@pytest.mark.single_relay(
    "each relay issues its own token for the node; a cluster's replicas share one"
)
async def test_an_unreachable_first_address_is_skipped_for_the_next(
    start: Start, tmp_path: Path, runner: JobRunner
) -> None:
    _, second, token = await _two_relays(start, tmp_path)
    closed = second.port + 1 if second.port < 65535 else second.port - 1
    config = replace(
        CONFIG, token=token, relay_port=closed, more_relays=(("127.0.0.1", second.port),)
    )
    async for daemon in _serve(config, runner):
        await _shown_on(second, "roamer")
        assert daemon.connections == 1
