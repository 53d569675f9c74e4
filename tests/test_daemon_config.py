"""The daemon's settings and its reconnect backoff."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest

from gpu_node.daemon.backoff import Backoff
from gpu_node.daemon.config import ConfigError, NodeConfig, add_arguments, from_args


def _config(argv: list[str], env: dict[str, str] | None = None) -> NodeConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(argv), env or {})


def test_flags_fill_every_field() -> None:
    config = _config(
        [
            "--relay", "relay.example:7000", "--token", "s3cret", "--name", "attic",
            "--device", "cpu", "--max-epochs", "50", "--max-pixels", "1_000_000",
            "--slots", "2", "--models-dir", "/models", "--backoff-max", "5",
        ]
    )  # fmt: skip
    assert (config.relay_host, config.relay_port) == ("relay.example", 7000)
    assert config.token == "s3cret"
    assert (config.name, config.device) == ("attic", "cpu")
    assert (config.max_epochs, config.max_pixels, config.slots) == (50, 1_000_000, 2)
    assert config.models_dir == Path("/models")
    assert config.backoff_max == 5.0
    assert "s3cret" not in repr(config)


def test_environment_fills_in_and_flags_win() -> None:
    env = {
        "STYLERELAY_NODE_RELAY": "10.0.0.2",
        "STYLERELAY_NODE_TOKEN": "from-env",
        "STYLERELAY_NODE_MAX_EPOCHS": "300",
        "STYLERELAY_NODE_SLOTS": "3",
    }
    config = _config(["--slots", "1"], env)
    assert (config.relay_host, config.relay_port) == ("10.0.0.2", 5678)
    assert config.token == "from-env"
    assert config.max_epochs == 300
    assert config.slots == 1
    assert config.name  # the hostname


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("abc123\n")
    assert _config(["--relay", "h:1", "--token-file", str(path)]).token == "abc123"


@pytest.mark.parametrize(
    ("address", "expected"),
    [("[::1]:9000", ("::1", 9000)), ("::1", ("::1", 5678)), ("host", ("host", 5678))],
)
def test_addresses(address: str, expected: tuple[str, int]) -> None:
    config = _config(["--relay", address, "--token", "t"])
    assert (config.relay_host, config.relay_port) == expected


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "no relay"),
        (["--relay", "h:1"], {}, "no node token"),
        (["--relay", "h:99999", "--token", "t"], {}, "port must be"),
        (["--relay", "h:port", "--token", "t"], {}, "not a number"),
        (["--relay", ":80", "--token", "t"], {}, "no host"),
        (["--relay", "h:1", "--token", "t", "--slots", "0"], {}, "--slots"),
        (["--relay", "h:1", "--token", "t", "--max-epochs", "0"], {}, "--max-epochs"),
        (["--relay", "h:1", "--token", "t"], {"STYLERELAY_NODE_SLOTS": "many"}, "SLOTS"),
        (["--relay", "h:1", "--token", "t", "--token-file", "x"], {}, "not both"),
        (["--relay", "h:1", "--token-file", "/nonexistent/tok"], {}, "cannot be read"),
        (["--relay", "h:1", "--token", "t", "--backoff-max", "-1"], {}, "backoff"),
    ],
)
def test_bad_settings_are_refused_by_name(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(argv, env)


def test_backoff_grows_to_the_cap_with_jitter_below_the_ceiling() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(4))
    ceilings = []
    for _ in range(12):
        ceiling = backoff.ceiling()
        delay = backoff.failure()
        assert 0.0 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings[:7] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert set(ceilings[6:]) == {60.0}


def test_backoff_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(7)
    delays = []
    for _ in range(2000):
        backoff = Backoff(1.0, 60.0, rng=rng)
        backoff.failures = 10
        delays.append(backoff.failure())
    assert min(delays) < 3.0
    assert max(delays) > 57.0
    assert 27.0 < sum(delays) / len(delays) < 33.0  # uniform on [0, 60): mean 30


def test_backoff_resets_only_after_a_stable_connection() -> None:
    backoff = Backoff(1.0, 60.0, stable_after=30.0, rng=random.Random(1))
    for _ in range(5):
        backoff.failure()
    backoff.connection_ended(uptime=2.0)
    assert backoff.ceiling() == 32.0
    backoff.connection_ended(uptime=31.0)
    assert backoff.ceiling() == 1.0


def test_backoff_survives_very_many_failures() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(0))
    backoff.failures = 100_000
    assert 0.0 <= backoff.failure() <= 60.0
