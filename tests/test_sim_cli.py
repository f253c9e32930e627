"""`prewarm replay` end to end: formats, a DuckDB trace written by serve's schema, sweeps, errors, the plot."""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import pytest
from sim_helpers import random_trace

from prewarm.cli import main
from prewarm.store import migrate


@pytest.fixture
def trace_csv(tmp_path):
    tr = random_trace(9, n=1500, models=6)
    path = tmp_path / "trace.csv"
    tr.events.assign(model=[f"llama3.1:8b-{m}" if m != "m00" else "qwen2.5:0.5b" for m in tr.events.model]) \
        .to_csv(path, index=False)
    return path


def test_json_has_the_contract_fields_per_policy_and_budget(trace_csv, capsys):
    rc = main(["replay", "--trace", str(trace_csv), "--vram-budget", "8GB,16GB", "--policy", "lru,ollama,oracle",
               "--format", "json"])
    assert rc == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert [(r["policy"], r["budget"]) for r in rows] == [
        (p, b) for b in (8 * 10**9, 16 * 10**9) for p in ("lru", "ollama", "oracle")]
    for r in rows:
        for key in ("policy", "budget", "requests", "cold_starts", "cold_start_rate", "added_latency_s_total",
                    "p99_added_latency_s", "vram_gb_hours", "loads", "evictions", "scored_from", "scored_to",
                    "oversized_models"):
            assert key in r
    assert "default rule" in out.err  # the catalog note names the rule and the count


def test_csv_and_table(trace_csv, capsys):
    assert main(["replay", "--trace", str(trace_csv), "--policy", "topn", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("policy,budget,") and len(lines) == 2
    assert main(["replay", "--trace", str(trace_csv), "--policy", "histogram", "--warmup", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "scored:" in out and "histogram" in out


def _serve_db(path, requests: int) -> duckdb.DuckDBPyConnection:
    """A database as serve writes it, with `requests` logged every 7 minutes (two models); left open."""
    con = duckdb.connect(str(path))
    migrate(con)
    ts = pd.date_range("2026-11-01", periods=requests, freq="7min", tz="UTC")
    for k, t in enumerate(ts):
        con.execute("INSERT INTO requests (id, ts_start, model, user_id) VALUES (?, ?, ?, ?)",
                    [str(k), t.to_pydatetime(), "llama3.2:1b" if k % 3 else "mistral:7b", "u"])
    return con


def test_duckdb_file_from_serve(tmp_path, capsys):
    db = tmp_path / "prewarm.duckdb"
    _serve_db(db, 50).close()
    assert main(["replay", "--trace", str(db), "--policy", "lru", "--format", "json", "--warmup", "0"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["requests"] == 50 and row["cold_starts"] >= 2


def test_plot_is_written(trace_csv, tmp_path):
    png = tmp_path / "out.png"
    assert main(["replay", "--trace", str(trace_csv), "--policy", "lru,oracle", "--vram-budget", "6GB,12GB",
                 "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["--vram-budget", "lots"], "not a size"),
    (["--policy", "magic"], "unknown policy"),
    (["--warmup", "1.5"], "--warmup"),
    (["--recency-half-life", "soon"], "--recency-half-life"),
    (["--recency-half-life", "0s"], "--recency-half-life"),
])
def test_bad_input_is_a_one_line_error(trace_csv, capsys, argv, message):
    assert main(["replay", "--trace", str(trace_csv), *argv]) == 1
    assert message in capsys.readouterr().err


def test_missing_trace(tmp_path, capsys):
    assert main(["replay", "--trace", str(tmp_path / "nope.csv")]) == 1
    assert "not found" in capsys.readouterr().err


def test_recorded_forecasts_from_serves_database_are_planned_from(tmp_path, capsys):
    """`--forecasts` reads the forecasts table serve logged: the forecast policy plans from those rows at their
    made_at (one plan per forecast made) and trains nothing."""
    db = tmp_path / "prewarm.duckdb"
    con = _serve_db(db, 60)
    made = pd.date_range("2026-11-01 02:00", periods=20, freq="10min", tz="UTC")
    for m in made:
        for model, mu in (("mistral:7b", 0.5), ("llama3.2:1b", 1.0)):
            con.execute("INSERT INTO forecasts VALUES ('outside', ?, ?, ?, ?, ?, ?, ?, ?)",
                        [m.to_pydatetime(), model, m.to_pydatetime(), (m + pd.Timedelta("10min")).to_pydatetime(),
                         mu, None, mu, mu])
    con.close()
    assert main(["replay", "--trace", str(db), "--forecasts", str(db), "--policy", "forecast", "--format", "json",
                 "--vram-budget", "16GB"]) == 0
    out = capsys.readouterr()
    [row] = json.loads(out.out)
    assert "planned from 20 recorded forecasts" in out.err
    assert row["forecast_windows"] == 20 and row["fits"] == 0


def test_recorded_forecasts_that_are_not_there_are_a_one_line_error(trace_csv, tmp_path, capsys):
    assert main(["replay", "--trace", str(trace_csv), "--forecasts", str(tmp_path / "none.csv")]) == 1
    assert "forecasts not found" in capsys.readouterr().err


def test_the_recency_half_life_reaches_the_planning_state(trace_csv, capsys):
    """The forecast family plans with the half-life given (serve's recency_half_life): a shorter one follows the
    mix as it shifts, so the ablation's decisions change; the baselines keep their own."""
    runs = {}
    for hl in ("6h", "2m"):
        assert main(["replay", "--trace", str(trace_csv), "--policy", "forecast-recency,lfu", "--format", "json",
                     "--recency-half-life", hl, "--vram-budget", "6GB"]) == 0
        runs[hl] = {r["policy"]: (r["cold_starts"], r["loads"]) for r in json.loads(capsys.readouterr().out)}
    assert runs["6h"]["lfu"] == runs["2m"]["lfu"]
    assert runs["6h"]["forecast-recency"] != runs["2m"]["forecast-recency"]
