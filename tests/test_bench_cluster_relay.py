"""bench/cluster_relay.py runs end to end: a quick run of three replica processes on a
throwaway PostgreSQL and SeaweedFS through their HTTP APIs, and the single relay, prints
figures for both; every watched job's final event reaches another replica's WebSocket
(no timing goals asserted: those are the bench's)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_engines import pg_binary, weed_binary

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(pg_binary("initdb") is None, reason="PostgreSQL is not installed")
@pytest.mark.skipif(weed_binary() is None, reason="SeaweedFS is not installed")
def test_quick_cluster_relay_bench_runs_every_phase(tmp_path: Path) -> None:
    pytest.importorskip("asyncpg")
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cluster_relay.py"), "--quick", "--json", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["cluster_jobs_per_s"] > 0
    assert figures["single_jobs_per_s"] > 0
    events = figures["cluster_events"]
    seen, watched = (int(n) for n in events["final_events"].split(" of "))
    assert watched > 0
    assert seen == watched, events["missed_finals"]
    assert events["progress_share"] >= 0.99
