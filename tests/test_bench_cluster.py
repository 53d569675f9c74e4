"""bench/cluster.py runs end to end: a quick run on a throwaway PostgreSQL prints figures
for the cluster and its peer, every job done (no timing goals asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_engines import pg_binary

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(pg_binary("initdb") is None, reason="PostgreSQL is not installed")
def test_quick_cluster_bench_finishes_every_job() -> None:
    pytest.importorskip("asyncpg")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cluster.py"), "--quick", "--no-s3"],
        check=False,
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])["rows"]
    assert [r["run"] for r in rows] == ["throughput", "50/s"]
    for row in rows:
        for who in ("cluster", "single"):
            assert row[who]["done"] == row[who]["jobs"] > 0, row
            assert row[who]["jobs_per_s"] > 0
