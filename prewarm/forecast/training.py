"""One training run, start to finish: backtest, fit, artifact, the latest pointer, pruning.

This is the function the service's worker process runs and ``prewarm train``
runs in the foreground. It never touches DuckDB (in the service, only the
serve process may open the file): it takes an events frame and returns a
:class:`TrainResult` whose rows the caller writes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prewarm.forecast.artifacts import latest_run, new_run_id, prune, read_manifest, set_latest
from prewarm.forecast.backtest import backtest, is_worse
from prewarm.forecast.model import ForecastParams, HeatForecaster, Progress
from prewarm.forecast.seasonal import make_pool


@dataclass
class TrainResult:
    run_id: str
    started_at: float
    finished_at: float
    accepted: bool
    reason: str
    artifact_path: str
    n_models: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    pid: int = field(default_factory=os.getpid)

    def training_run_row(self) -> dict[str, Any]:
        """The ``training_runs`` row (DESIGN.md contract)."""
        return {
            "run_id": self.run_id,
            "started_at": _utc(self.started_at),
            "finished_at": _utc(self.finished_at),
            "n_models": self.n_models,
            "params": json.dumps(self.params),
            "metrics": json.dumps({**self.metrics, "accepted": self.accepted, "reason": self.reason},
                                  default=float),
            "artifact_path": self.artifact_path,
        }


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def train_run(events: pd.DataFrame, params: ForecastParams, models_dir: str | Path, keep_runs: int = 5,
              workers: int = 1, end_ts: float | None = None, progress: Progress | None = None,
              run_id: str | None = None) -> TrainResult:
    """Backtest on the most recent data, fit on all of it, store the run; promote it unless it is worse.

    ``end_ts`` is the fit's cut-off (the service passes now; default: just after
    the last event). The run folder is written either way, so a rejected run can
    be inspected; only an accepted one becomes ``latest``.
    """
    started = time.time()
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    run_id = run_id or new_run_id(started)
    current = latest_run(models_dir)
    previous: HeatForecaster | None = None
    current_metrics: dict[str, Any] | None = None
    if current is not None:
        try:
            previous = HeatForecaster.load(current)
            current_metrics = read_manifest(current).get("metrics")
        except (OSError, ValueError, EOFError, AttributeError, ImportError):
            previous = None  # an unreadable artifact only costs the warm start
    if end_ts is None:
        end_ts = float(np.nextafter(events["ts"].iloc[-1], np.inf)) if len(events) else started
    executor = make_pool(workers) if workers > 1 else None
    try:
        metrics, fitted_before = backtest(events, params, previous, executor=executor, progress=progress)
        forecaster = HeatForecaster.fit(events, end_ts, params, fitted_before or previous,
                                        executor=executor, progress=progress)
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    metrics["methods"] = forecaster.fit_report.get("method_counts", {})
    metrics["per_model_method"] = forecaster.fit_report.get("methods", {})
    worse = is_worse(metrics, current_metrics)
    accepted = not worse
    reason = ("accepted" if accepted else
              f"rejected: backtest skill {metrics.get('skill')} worse than the serving run's "
              f"{(current_metrics or {}).get('skill')}")
    forecaster.run_id = run_id
    forecaster.metrics = metrics
    run_dir = models_dir / run_id
    forecaster.save(run_dir, extra={"accepted": accepted, "reason": reason,
                                    "previous_run": current.name if current else None})
    if accepted:
        set_latest(models_dir, run_dir)
    prune(models_dir, keep_runs)
    return TrainResult(run_id=run_id, started_at=started, finished_at=time.time(), accepted=accepted,
                       reason=reason, artifact_path=str(run_dir), n_models=len(forecaster.models),
                       params=params.to_dict(), metrics=metrics)


def forecast_rows(frame: pd.DataFrame, run_id: str | None, made_at: float) -> list[dict[str, Any]]:
    """``forecasts`` rows (DESIGN.md contract) from a predict() frame; timestamps as UTC datetimes."""
    made = _utc(made_at)
    starts = pd.to_datetime(frame["window_start"].to_numpy(), unit="s", utc=True).round("us")  # TIMESTAMPTZ: us
    ends = pd.to_datetime(frame["window_end"].to_numpy(), unit="s", utc=True).round("us")
    return [
        {"run_id": run_id, "made_at": made, "model": m, "window_start": s.to_pydatetime(),
         "window_end": e.to_pydatetime(), "expected_requests": float(mu), "p_any": float(p),
         "lower": float(lo), "upper": float(hi)}
        for m, s, e, mu, p, lo, hi in zip(frame["model"], starts, ends, frame["expected_requests"],
                                          frame["p_any"], frame["lower"], frame["upper"], strict=False)
    ]
