"""The relay's Config: flags win over STYLERELAY_* variables, bad values fail loudly."""

from pathlib import Path

import pytest

from relay.config import Config
from relay.errors import ConfigError


def test_defaults_match_the_issue() -> None:
    config = Config.load({}, {})
    assert (config.host, config.http_port, config.node_port) == ("0.0.0.0", 1337, 5678)
    assert config.result_ttl == 24 * 3600
    assert config.max_upload_bytes == 10 * 1024 * 1024


def test_flag_wins_over_environment_which_wins_over_default() -> None:
    env = {"STYLERELAY_MAX_EPOCHS": "300", "STYLERELAY_HTTP_PORT": "8080"}
    config = Config.load({"max_epochs": "50"}, env)
    assert config.max_epochs == 50
    assert config.http_port == 8080
    assert config.node_port == 5678


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("15m", 900.0), ("24h", 86400.0), ("1.5d", 129600.0)]
)
def test_durations_take_units(text: str, seconds: float) -> None:
    assert Config.load({"result_ttl": text}, {}).result_ttl == seconds


def test_values_are_cast() -> None:
    proxies = "127.0.0.1, 10.1.2.0/24"
    flags = {"data_dir": "/tmp/x", "max_upload_mb": "2.5", "trusted_proxy": proxies}
    config = Config.load(flags, {})
    assert config.data_dir == Path("/tmp/x")
    assert config.max_upload_bytes == int(2.5 * 1024 * 1024)
    assert config.trusted_proxy == ("127.0.0.1/32", "10.1.2.0/24")


@pytest.mark.parametrize(
    ("flags", "env", "named", "says"),
    [
        ({"max_epochs": "lots"}, {}, "--max-epochs", "whole number"),
        ({}, {"STYLERELAY_MAX_EPOCHS": "0"}, "STYLERELAY_MAX_EPOCHS", "at least 1"),
        ({"http_port": "70000"}, {}, "--http-port", "0..65535"),
        ({"result_ttl": "soon"}, {}, "--result-ttl", "duration"),
        ({"trusted_proxy": "maybe"}, {}, "--trusted-proxy", "not an IP address"),
        ({"trusted_proxy": "yes"}, {}, "--trusted-proxy", "forge X-Forwarded-For"),
        ({"allowed_origins": "example.org"}, {}, "--allowed-origins", "scheme://host"),
        ({"max_pixels": "999999999"}, {}, "--max-pixels", "at most"),
    ],
)
def test_bad_values_fail_naming_the_setting(
    flags: dict[str, str | None], env: dict[str, str], named: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(flags, env)
    assert named in str(info.value)
    assert says in str(info.value)


def test_default_size_above_max_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="default size"):
        Config.load({"default_size": "4096"}, {})
