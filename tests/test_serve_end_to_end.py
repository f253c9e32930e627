"""The whole service as users run it: a forecaster trained from a trace, then `prewarm serve` (scheduler on)
in front of `prewarm emulate`: forecasts are written, the plan loads the hot models before any request, the
first request for a planned model is warm, and `prewarm sql` reads forecasts while the service runs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from test_proxy_serve import prewarm_sql

from prewarm.catalog import default_entry
from prewarm.localproc import LOOPBACK, clean_env, free_port, wait_http
from prewarm.localproc import PREWARM_CMD as PREWARM
from prewarm.workload import synth


def post(url: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(url, json.dumps(body or {}).encode(), {"Content-Type": "application/json"},
                                 method="POST")
    with LOOPBACK.open(req, timeout=60) as r:
        return json.loads(r.read())


def get(url: str) -> dict:
    with LOOPBACK.open(url, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A model trained on three days of traffic ending now, the way `prewarm train --trace` is used to bootstrap."""
    ev = synth(models=4, users=40, days=3, seed=3, rate=4.0)
    ev["ts"] += time.time() - 60 - float(ev["ts"].max())
    trace = tmp_path / "history.csv"
    ev.to_csv(trace, index=False)
    models_dir, db = tmp_path / "models", tmp_path / "p.duckdb"
    out = subprocess.run(PREWARM + ["train", "--trace", str(trace), "--db", str(db), "--models-dir", str(models_dir),
                                    "--no-progress"], capture_output=True, text=True, timeout=300, env=clean_env())
    assert out.returncode == 0, out.stderr
    return db, models_dir, sorted(ev["model"].unique())


def test_trained_service_forecasts_plans_and_answers_sql(tmp_path: Path, trained) -> None:
    db, models_dir, names = trained
    catalog = tmp_path / "catalog.csv"
    entries = [default_entry(m) for m in names]
    catalog.write_text("model,size_bytes,load_seconds\n" + "".join(
        f"{e.model},{e.size_bytes},{e.load_seconds}\n" for e in entries))
    budget = sum(e.size_bytes for e in entries)  # room for every model the forecast may want
    emu_port, port = free_port(), free_port()
    env = clean_env() | {"PREWARM_MODELS_DIR": str(models_dir)}
    emu = subprocess.Popen(PREWARM + ["emulate", "--listen", f"127.0.0.1:{emu_port}", "--catalog", str(catalog),
                                      "--vram", str(2 * budget), "--time-scale", "0.001"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    serve = None
    try:
        wait_http(f"http://127.0.0.1:{emu_port}/api/version", emu)
        serve = subprocess.Popen(
            PREWARM + ["serve", "--upstream", f"http://127.0.0.1:{emu_port}", "--listen", f"127.0.0.1:{port}",
                       "--db", str(db), "--vram-budget", str(budget), "--catalog", str(catalog)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/prewarm/health", serve)
        out = post(base + "/prewarm/forecast")
        assert out["ok"] and out["models"] == len(names)
        status = get(base + "/prewarm/status")
        planned = set(status["planned_resident"])
        assert planned, status["last_plan"]
        resident = {r["model"] for r in status["resident"]}
        assert planned <= resident  # loaded before anyone asked
        model = sorted(planned)[0]
        post(base + "/api/generate", {"model": model, "prompt": "hi", "stream": False})

        res = prewarm_sql(db, "select model, window_start, p_any, actual_requests from v_forecast_vs_actual limit 5")
        assert res.returncode == 0, res.stderr
        assert len(json.loads(res.stdout)) == 5
        res = prewarm_sql(db, "select model, action, ok, reason from prewarm_actions where action = 'load'")
        loads = json.loads(res.stdout)
        assert {r["model"] for r in loads if r["ok"]} >= planned
        assert all(r["reason"].startswith("prewarm:") for r in loads)
    finally:
        if serve is not None:
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(60) == 0, serve.stderr.read() if serve.stderr else ""
        emu.terminate()
        emu.wait(30)
    res = prewarm_sql(db, f"select cold from requests where model = '{model}'")
    assert json.loads(res.stdout) == [{"cold": False}]
