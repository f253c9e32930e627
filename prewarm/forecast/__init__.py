"""The forecaster: request counts per model and window (series), the heat model (a seasonal fit per model,
recency and per-user features combined by gradient boosting), its backtest, training runs and artifacts.

`HeatForecaster.predict` is what the scheduler, the demo and the replay call; `train_run`
is the job the scheduler runs in a worker process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prewarm._faces import lazy_face

if TYPE_CHECKING:
    from prewarm.forecast.artifacts import latest_run, load_latest, prune, read_manifest, run_dirs, set_latest
    from prewarm.forecast.backtest import format_table, is_worse
    from prewarm.forecast.horizon import canonical_outlook, horizon_outlook
    from prewarm.forecast.model import ForecastParams, HeatForecaster
    from prewarm.forecast.seasonal import SeasonalConfig
    from prewarm.forecast.series import TraceError, count_matrix, load_trace
    from prewarm.forecast.training import TrainResult, forecast_rows, train_run

_EXPORTS = {
    "ForecastParams": "prewarm.forecast.model",
    "HeatForecaster": "prewarm.forecast.model",
    "SeasonalConfig": "prewarm.forecast.seasonal",
    "TraceError": "prewarm.forecast.series",
    "TrainResult": "prewarm.forecast.training",
    "count_matrix": "prewarm.forecast.series",
    "forecast_rows": "prewarm.forecast.training",
    "format_table": "prewarm.forecast.backtest",
    "canonical_outlook": "prewarm.forecast.horizon",
    "horizon_outlook": "prewarm.forecast.horizon",
    "is_worse": "prewarm.forecast.backtest",
    "latest_run": "prewarm.forecast.artifacts",
    "load_latest": "prewarm.forecast.artifacts",
    "load_trace": "prewarm.forecast.series",
    "prune": "prewarm.forecast.artifacts",
    "read_manifest": "prewarm.forecast.artifacts",
    "run_dirs": "prewarm.forecast.artifacts",
    "set_latest": "prewarm.forecast.artifacts",
    "train_run": "prewarm.forecast.training",
}
__all__ = [
    "ForecastParams",
    "HeatForecaster",
    "SeasonalConfig",
    "TraceError",
    "TrainResult",
    "count_matrix",
    "forecast_rows",
    "format_table",
    "canonical_outlook",
    "horizon_outlook",
    "is_worse",
    "latest_run",
    "load_latest",
    "load_trace",
    "prune",
    "read_manifest",
    "run_dirs",
    "set_latest",
    "train_run",
]
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
