"""`prewarm train` and `prewarm forecast`: the forecaster for external schedulers (cron, a Kubernetes CronJob).

Both open the database directly, which DuckDB allows to one process at a time;
while `prewarm serve` holds it they say so in one line instead of failing
obscurely (the service trains and forecasts on its own schedule).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

import duckdb
import pandas as pd

from prewarm.config import Settings, load_settings
from prewarm.forecast.artifacts import load_latest
from prewarm.forecast.backtest import format_table
from prewarm.forecast.model import ForecastParams
from prewarm.forecast.series import TraceError, events_from_requests, load_trace
from prewarm.forecast.training import train_run

TRAIN_WORKERS = 2


class ProgressLine:
    """A carriage-return progress line on stderr; silent when off or when stderr is not a terminal."""

    def __init__(self, enabled: bool, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self.start = time.monotonic()
        self._last = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        pct = f"{done}/{total}" if total else ""
        line = f"\rtrain {time.monotonic() - self.start:6.1f}s  {stage:<32} {pct:<10}"
        if line != self._last:
            self.stream.write(line)
            self.stream.flush()
            self._last = line

    def close(self) -> None:
        if self.enabled and self._last:
            self.stream.write("\r" + " " * (len(self._last) - 1) + "\r")
            self.stream.flush()


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None), overrides={
        "db": getattr(args, "db", None),
        "window": getattr(args, "window", None),
        "models_dir": getattr(args, "models_dir", None),
    })


def open_db(path: str) -> duckdb.DuckDBPyConnection:
    """Open (and migrate) the database, or explain in one line that a running service holds it."""
    from prewarm.errors import CommandError
    from prewarm.store.discovery import read_service_file
    from prewarm.store.schema import migrate

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(path)
    except duckdb.IOException as exc:
        info = read_service_file(path)
        if info is None:
            raise CommandError(f"{path} is locked by another process ({str(exc).splitlines()[0]})") from None
        raise CommandError(f"{path} is in use by `prewarm serve` (pid {info.pid}): the service trains and "
                           f"forecasts on its own schedule (train_cron); to run one now, "
                           f"POST {info.url}/prewarm/train or {info.url}/prewarm/forecast") from None
    migrate(con)
    return con


def params_from_settings(settings: Settings) -> ForecastParams:
    return ForecastParams(window_s=float(settings.window), horizon=int(settings.horizon_windows))


def run_train(args: argparse.Namespace) -> int:
    from prewarm.errors import CommandError

    settings = _settings(args)
    t0 = time.monotonic()
    con = open_db(settings.db)
    try:
        if args.trace:
            try:
                events = load_trace(args.trace)
            except TraceError as exc:
                raise CommandError(str(exc)) from None
            source = args.trace
        else:
            events = events_from_requests(con)
            source = f"requests in {settings.db}"
        if events.empty:
            raise CommandError(f"no requests to learn from in {source}")
        print(f"training on {len(events)} requests from {source} "
              f"({events['model'].nunique()} models, window {settings.window:g}s)", file=sys.stderr)
        progress = ProgressLine(not args.no_progress)
        try:
            result = train_run(events, params_from_settings(settings), settings.models_dir,
                               keep_runs=settings.keep_runs, workers=TRAIN_WORKERS, progress=progress)
        finally:
            progress.close()
        row = result.training_run_row()
        con.register("_run", pd.DataFrame([row]))
        con.execute("INSERT INTO training_runs BY NAME SELECT * FROM _run")
        con.unregister("_run")
    finally:
        con.close()
    methods = ", ".join(f"{k} {v}" for k, v in sorted(result.metrics.get("methods", {}).items()))
    print(f"run {result.run_id}: {result.n_models} models ({methods}); {result.reason}")
    print(format_table(result.metrics))
    print(f"artifact: {result.artifact_path}  ({time.monotonic() - t0:.1f}s)")
    return 0


def run_forecast(args: argparse.Namespace) -> int:
    settings = _settings(args)
    forecaster = load_latest(settings.models_dir)
    horizon = int(args.horizon or settings.horizon_windows)
    now = time.time()
    con = open_db(settings.db)
    try:
        lookback = 2 * 86400.0 + horizon * forecaster.params.window_s
        events = events_from_requests(con, since_ts=now - lookback)
        frame = forecaster.predict(events, now, horizon)
        con.register("_fc", frame)
        con.execute(
            "INSERT INTO forecasts SELECT ?::VARCHAR, to_timestamp(?), model, to_timestamp(window_start), "
            "to_timestamp(window_end), expected_requests, p_any, lower, upper FROM _fc",
            [forecaster.run_id, now])
        con.unregister("_fc")
    finally:
        con.close()
    busiest = frame.groupby("model")["p_any"].max().sort_values(ascending=False).head(5)
    top = ", ".join(f"{m} {p:.2f}" for m, p in busiest.items())
    print(f"wrote {len(frame)} forecasts ({frame['model'].nunique()} models x {horizon} windows) "
          f"from run {forecaster.run_id}; highest p_any: {top}")
    return 0
