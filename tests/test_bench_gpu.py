"""`bench/gpu.py --device cpu --quick` runs every case and writes the figures as numbers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_cpu_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--quick",
               "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    assert "correctness gatys" in done.stdout
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["quick"] is True
    names = [row["name"] for row in report["rows"]]
    for prefix in ("gatys", "fast", "arbitrary"):
        assert any(name.startswith(prefix) for name in names)
    assert any("batch" in name for name in names) and any("bf16" in name for name in names)
    for case in ("fp32", "tf32+compile", "checkpointed", "x2 devices"):  # the node's paths
        assert any(case in name for name in names), case
    for row in report["rows"]:
        assert isinstance(row["ours_s"], float) and row["ours_s"] > 0
        assert isinstance(row["peak_mb"], float) and row["peak_mb"] > 0
        if "batch" in row["name"] or "latency" in row["name"]:
            assert isinstance(row["peer_s"], float) and row["peer_s"] > 0
    assert set(report["largest_side"]) == {"gatys", "fast", "arbitrary"}
    assert all(side > 0 for side in report["largest_side"].values())
    assert {c["method"] for c in report["correctness"]} == {"gatys", "fast", "arbitrary"}
    assert all(c["ok"] and isinstance(c["mad"], float) for c in report["correctness"])
