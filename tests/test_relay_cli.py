"""`python -m relay tokens ...` as an operator runs it, in a subprocess."""

import subprocess
import sys
from pathlib import Path

import pytest

from relay.tokens import TokenStore


def _relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_cli_add_list_revoke(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    added = _relay("tokens", "add", "gpu-home", "--data-dir", data)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert TokenStore(Path(data)).verify(token) == "gpu-home"
    # --data-dir before the subcommand works too.
    listed = _relay("--data-dir", data, "tokens", "list")
    assert listed.returncode == 0
    assert listed.stdout.startswith("gpu-home\t")
    assert token not in listed.stdout
    revoked = _relay("tokens", "revoke", "gpu-home", "--data-dir", data)
    assert revoked.returncode == 0
    assert TokenStore(Path(data)).verify(token) is None
    again = _relay("tokens", "revoke", "gpu-home", "--data-dir", data)
    assert again.returncode == 2
    assert again.stderr.strip() == "stylerelay-relay: no node called 'gpu-home' has a token"


def test_cli_bad_config_is_one_line(tmp_path: Path) -> None:
    result = _relay("--max-epochs", "many", "tokens", "list", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == "stylerelay-relay: --max-epochs: expected a whole number, got 'many'\n"
