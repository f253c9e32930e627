"""`prewarm demo --quick` runs to the end: emulator, proxy, prewarmer, SQL and replay, as a new user sees it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

from prewarm.localproc import clean_env


def test_quick_demo_runs_to_the_end(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "prewarm", "demo", "--quick", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env=clean_env())
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "EMULATOR" in text
    for step in ("1. workload", "2. training", "3. playing", "4. what the request log says", "5. the same day"):
        assert step in text
    assert "same traffic under Ollama's own keep-alive (simulated)" in text
    con = duckdb.connect(str(tmp_path / "demo.duckdb"), read_only=True)
    try:
        n, users, failed = con.execute(
            "SELECT count(*), count(DISTINCT user_id), count(*) FILTER (WHERE status <> 200) FROM requests").fetchone()
        planned_warm = con.execute("""
            SELECT count(*) FROM prewarm_actions a
            WHERE a.action = 'load' AND a.ok AND a.reason LIKE 'prewarm:%' AND EXISTS (
                SELECT 1 FROM requests r WHERE r.model = a.model AND r.ts_start > a.ts AND NOT r.cold)""").fetchone()[0]
    finally:
        con.close()
    assert n > 100 and users > 10
    assert failed <= 0.02 * n, f"{failed} of {n} demo requests failed"
    assert planned_warm > 0  # a model loaded from the forecast later served a warm request
