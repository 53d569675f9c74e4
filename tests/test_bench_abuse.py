"""bench/abuse.py runs end to end: a smoke run of two cheap attacks writes rows of the
promised shape, and the no-attack baseline has real figures (no timing goals asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW_KEYS = {
    "attack",
    "item",
    "what",
    "posted",
    "done",
    "p50_ms",
    "p99_ms",
    "errors",
    "relay_up",
    "nodes_at_end",
    "good_node_connected",
    "peak_rss_mb",
    "killed_at_mb",
    "log_errors",
    "notes",
    "meets_goals",
    "attack_defects",
}


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_quick_run_writes_rows_with_a_measured_baseline(tmp_path: Path) -> None:
    out = tmp_path / "abuse.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "bench/abuse.py", "--quick", "--attacks", "malformed,params"]
    done = subprocess.run(
        [*command, "--json", str(out)],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["goals"] == {"p99_ms": 2000.0, "peak_rss_mb": 400.0}
    rows = report["rows"]
    assert [r["attack"] for r in rows] == ["baseline", "params", "malformed"]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert isinstance(row["relay_up"], bool) and isinstance(row["errors"], dict)
    baseline = rows[0]
    assert baseline["posted"] >= 3 and baseline["done"] == baseline["posted"]
    assert baseline["p50_ms"] > 0 and baseline["p99_ms"] >= baseline["p50_ms"]
    assert baseline["peak_rss_mb"] > 10
    assert baseline["relay_up"] and baseline["good_node_connected"]
    assert "statuses" in rows[2]["notes"]  # the malformed attack reports what it got
    assert "baseline" in done.stdout and "malformed" in done.stdout
