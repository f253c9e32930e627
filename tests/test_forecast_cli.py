"""`prewarm train` / `prewarm forecast` end to end on a small trace, and the one-line answer when serve holds the file."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import duckdb

from prewarm.cli import main
from prewarm.forecast import latest_run
from prewarm.store import ServiceInfo, write_service_file
from prewarm.workload import synth, write_trace


def test_train_from_a_trace_then_forecast_then_query(tmp_path, capsys) -> None:
    trace = tmp_path / "t.parquet"
    ev = synth(models=5, users=40, days=3, seed=8, rate=3.0)
    ev["ts"] += time.time() - 300 - float(ev["ts"].max())  # the log ends now, so forecasts follow it
    write_trace(ev, trace)
    db, models = str(tmp_path / "p.duckdb"), str(tmp_path / "models")
    assert main(["train", "--trace", str(trace), "--db", db, "--models-dir", models, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "seasonal_naive" in out and "accepted" in out
    assert latest_run(tmp_path / "models") is not None
    con = duckdb.connect(db)
    con.register("ev", ev)
    con.execute("INSERT INTO requests (id, ts_start, model, user_id) "
                "SELECT row_number() OVER ()::VARCHAR, to_timestamp(ts), model, \"user\" FROM ev")
    con.close()
    assert main(["forecast", "--db", db, "--models-dir", models, "--horizon", "6"]) == 0
    assert "wrote 30 forecasts" in capsys.readouterr().out
    assert main(["sql", "--db", db, "--format", "json", "SELECT * FROM v_forecast_vs_actual"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5 * 5 and {"p_any", "actual_requests"} <= set(rows[0])
    assert main(["sql", "--db", db, "--format", "json", "SELECT metrics FROM training_runs"]) == 0
    metrics = json.loads(json.loads(capsys.readouterr().out)[0]["metrics"])
    assert metrics["accepted"] is True and "combined" in metrics["variants"]


def test_forecast_without_a_model_says_to_train(tmp_path, capsys) -> None:
    assert main(["forecast", "--db", str(tmp_path / "p.duckdb"), "--models-dir", str(tmp_path / "m")]) == 1
    assert "prewarm train" in capsys.readouterr().err


def test_train_on_a_database_held_by_serve_says_so_in_one_line(tmp_path, capsys) -> None:
    db = str(tmp_path / "held.duckdb")
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import duckdb,sys,time; c=duckdb.connect({db!r}); print('ok', flush=True); "
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        write_service_file(db, ServiceInfo(url="http://127.0.0.1:1", pid=holder.pid))
        assert main(["train", "--db", db, "--models-dir", str(tmp_path / "m"), "--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert "prewarm serve" in err and str(holder.pid) in err and "schedule" in err
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
