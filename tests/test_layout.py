"""The shape of the codebase: imports flow relay -> protocol <- gpu_node."""

import subprocess
import sys

import pytest


def _imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["protocol", "relay", "relay.__main__"])
def test_relay_and_protocol_do_not_import_torch(module: str) -> None:
    loaded = _imported_after(module)
    assert "torch" not in loaded
    assert "gpu_node" not in loaded


def test_protocol_needs_only_stdlib_and_msgpack() -> None:
    loaded = _imported_after("protocol")
    assert not {"aiohttp", "asyncio", "PIL", "numpy"} & loaded


def test_node_cli_prints_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gpu_node", "--help"], capture_output=True, text=True, check=True
    )
    assert "stylerelay-node" in out.stdout
