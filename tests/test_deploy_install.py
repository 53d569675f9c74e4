"""The relay runs without torch: its modules import none of the node's heavy packages, and
`pip install '.[relay]'` into a fresh venv gives a relay that starts and answers."""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RELAY_MODULES = (
    "relay.cli", "relay.app", "relay.nodelink", "relay.mailer", "relay.status",
    "relay.metrics", "relay.tls", "relay.logs",
)  # fmt: skip
NODE_ONLY = ("torch", "torchvision", "numpy", "onnxruntime", "gpu_node")


def test_relay_modules_import_no_node_package() -> None:
    # A fresh interpreter: this test process may have imported torch for other tests.
    code = (
        "import sys\n"
        f"for name in {RELAY_MODULES!r}: __import__(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {NODE_ONLY!r})\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    )
    assert done.stdout.strip() == "", f"the relay imported {done.stdout.strip()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_relay_extra_installs_in_a_fresh_venv_without_torch_and_serves(tmp_path: Path) -> None:
    # A copy of the sources, so the build leaves nothing in the work tree.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("relay", "protocol", "gpu_node", "web", "stylerelay"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "docs/api.md"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin/python"), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--quiet", f"{src}[relay]"], check=True, timeout=480)
    listed = subprocess.run(
        [*pip, "list", "--format=freeze"], check=True, capture_output=True, text=True
    ).stdout.lower()
    installed = {line.split("==")[0] for line in listed.splitlines()}
    assert {"stylerelay", "aiohttp", "msgpack", "pillow"} <= installed
    assert not installed & {"torch", "torchvision", "numpy", "onnxruntime"}, installed

    http, node = _free_port(), _free_port()
    log = tmp_path / "relay.log"
    with log.open("w") as err:
        relay = subprocess.Popen(
            [str(venv / "bin/stylerelay-relay"), "--host", "127.0.0.1", "--http-port", str(http),
             "--node-port", str(node), "--data-dir", str(tmp_path / "data")],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert relay.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the relay did not answer within 30 s"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as r:
            assert b"stylerelay_nodes_connected 0" in r.read()
        # The API page reads docs/api.md from where the wheel installed it.
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api", timeout=5) as r:
            assert b"Stylerelay HTTP API" in r.read()
    finally:
        relay.terminate()
        relay.wait(timeout=20)
