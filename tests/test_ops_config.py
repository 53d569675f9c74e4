"""The operations settings: checked at start-up with a message naming the setting, and
`--log-format json` as the relay really starts."""

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay.config import Config
from relay.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"log_format": "xml"}, "--log-format: expected one of text, kv, json"),
        ({"public_url": "ftp://relay"}, "--public-url: expected an http(s) URL"),
        ({"smtp_port": "99999"}, "--smtp-port: a port is 0..65535"),
        ({"smtp_starttls": "maybe"}, "--smtp-starttls: expected yes/no"),
        ({"smtp_host": "mail.example.org"}, "--smtp-host needs --smtp-from"),
        ({"node_tls_key": "k.pem"}, "--node-tls-cert and --node-tls-key go together"),
        (
            {"smtp_host": "m", "smtp_from": "a@b.c", "public_url": "https://r", "smtp_user": "u"},
            "--smtp-user and --smtp-password go together",
        ),
    ],
)
def test_bad_operations_settings_are_named(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config.load(flags, {})


def test_settings_come_from_the_environment_and_hide_the_password() -> None:
    env = {
        "STYLERELAY_SMTP_HOST": "mail.example.org",
        "STYLERELAY_SMTP_FROM": "relay@example.org",
        "STYLERELAY_SMTP_USER": "relay",
        "STYLERELAY_SMTP_PASSWORD": "hunter2",
        "STYLERELAY_SMTP_STARTTLS": "no",
        "STYLERELAY_PUBLIC_URL": "https://relay.example.org/",
        "STYLERELAY_LOG_FORMAT": "JSON",
    }
    config = Config.load({}, env)
    assert config.mail_enabled and not config.smtp_starttls
    assert config.public_url == "https://relay.example.org"
    assert config.log_format == "json"
    assert "hunter2" not in repr(config)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_relay_started_with_log_format_json_logs_json_lines(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "relay", "--host", "127.0.0.1", "--log-format", "json"]
    args += ["--http-port", str(_free_port()), "--node-port", str(_free_port())]
    args += ["--data-dir", str(tmp_path / "data")]
    log = tmp_path / "relay.log"
    with log.open("w") as err:
        relay = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 30
            while "listening for nodes" not in log.read_text():
                assert relay.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        finally:
            relay.terminate()
            relay.wait(timeout=20)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "event", "msg"} <= set(d) for d in lines)
    assert any(d["logger"] == "relay.nodelink" for d in lines)
