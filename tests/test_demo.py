"""`prewarm demo --quick` runs to the end: emulator, proxy, prewarmer, SQL and replay, as a new user sees it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb


def test_quick_demo_runs_to_the_end(demo_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    out, tmp_path = demo_run
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "EMULATOR" in text
    for step in ("1. workload", "2. training", "3. playing", "4. what the request log says", "5. the same day"):
        assert step in text
    assert "Ollama's own keep-alive (simulated)" in text and "the best reactive policy here" in text
    assert "The demo's database is kept" in text and (tmp_path / "demo.duckdb").exists()
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
