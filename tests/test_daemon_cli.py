"""`python -m gpu_node --relay ...` as a person runs it: flags, exit status, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest
from daemon_helpers import fake_relay

from gpu_node.cli import main
from protocol import Bye, ByeReason, Drain


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--relay", "127.0.0.1:5678"], "no node token"),
        (["run", "--relay", "127.0.0.1:99999", "--token", "t"], "port must be 1..65535"),
        (["run", "--relay", "127.0.0.1:1", "--token", "t", "--slots", "0"], "--slots"),
        (["run", "--relay", "127.0.0.1:1", "--token", "t", "--device", "tpu"], "unknown device"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stylerelay-node: ")
    assert message in lines[0]


@pytest.mark.slow
async def test_sigterm_drains_says_bye_and_exits_0() -> None:
    async with fake_relay() as relay:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gpu_node", "--relay", f"127.0.0.1:{relay.port}",
            "--token", "t", "--device", "cpu", "--name", "sigterm-node",
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        # read the log as it comes, so a full pipe never blocks the daemon
        log_task = asyncio.create_task(proc.stderr.read())
        try:
            side = await relay.next_session(timeout=100)
            assert side.hello is not None and side.hello.node_name == "sigterm-node"
            proc.send_signal(signal.SIGTERM)
            rest = await side.until_closed()
            status = await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            log = (await log_task).decode()
            print(log)  # shown by pytest when the test fails
    assert [type(m) for m in rest] == [Drain, Bye]
    bye = rest[-1]
    assert isinstance(bye, Bye) and bye.reason is ByeReason.DRAINED
    assert status == 0
    for line in ("connecting to the relay", "connected to the relay", "draining", "stopped"):
        assert line in log
    assert "Traceback" not in log
