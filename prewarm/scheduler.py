"""The service's forecasting schedule: retrain on a cron, forecast every window (APScheduler 3.x).

Only wiring lives here; the work is :func:`prewarm.forecast.training.train_run`
and :meth:`HeatForecaster.predict`. Two rules shape it:

* Training runs in a separate worker process (a spawned ProcessPoolExecutor
  with one worker): a fit in a thread stalled the proxy's event loop by up to
  31 ms, in a process by under 2 ms. The worker never opens DuckDB (only the
  serve process may hold the file): the parent reads the events through
  ``Store.read_df`` in a thread, passes them over, and writes the
  ``training_runs`` row through ``Store.put_rows``.
* A failed or worse run keeps the previous model serving: the forecaster in
  memory is replaced only by an accepted run's artifact.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from prewarm.commands.train import params_from_settings
from prewarm.config import Settings
from prewarm.forecast.artifacts import latest_run
from prewarm.forecast.model import HeatForecaster
from prewarm.forecast.seasonal import single_threaded_worker
from prewarm.forecast.series import events_sql, normalise_events
from prewarm.forecast.training import TrainResult, forecast_rows, train_run

log = logging.getLogger(__name__)

OnForecast = Callable[[pd.DataFrame], Awaitable[None]]


class ForecastScheduler:
    """Holds the serving forecaster, the worker process and the two jobs."""

    def __init__(self, settings: Settings, store: Any, on_forecast: OnForecast | None = None) -> None:
        self.settings = settings
        self.store = store
        self.on_forecast = on_forecast
        self.params = params_from_settings(settings)
        self.models_dir = Path(settings.models_dir)
        self.forecaster: HeatForecaster | None = None
        self.last_result: TrainResult | None = None
        self.last_error: str | None = None
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=single_threaded_worker)
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._train_lock = asyncio.Lock()

    def load_latest(self) -> None:
        run = latest_run(self.models_dir)
        if run is not None:
            try:
                self.forecaster = HeatForecaster.load(run)
            except (OSError, ValueError, EOFError, AttributeError, ImportError) as exc:
                log.warning("forecaster: cannot load %s (%s); waiting for the next training run", run, exc)

    def start(self, train_at_start: bool = False) -> None:
        """Add the jobs; forecasts fire at window boundaries, so each covers whole windows from its start."""
        window = float(self.settings.window)
        first_boundary = datetime.fromtimestamp(math.ceil(time.time() / window) * window, tz=UTC)
        train = CronTrigger.from_crontab(self.settings.train_cron, timezone="UTC")
        self._scheduler.add_job(self.train_now, train, id="train", max_instances=1, coalesce=True,
                                misfire_grace_time=300)
        if train_at_start:
            self._scheduler.add_job(self.train_now, id="train-at-start")
        self._scheduler.add_job(self.forecast_now, IntervalTrigger(seconds=window, start_date=first_boundary),
                                id="forecast", max_instances=1, coalesce=True)
        self._scheduler.start()

    async def _events(self, lookback_s: float) -> pd.DataFrame:
        sql = events_sql(since_ts=time.time() - lookback_s)
        return normalise_events(await asyncio.to_thread(self.store.read_df, sql))

    async def train_now(self) -> TrainResult | None:
        """One training run in the worker process; None when it failed (the previous model keeps serving)."""
        async with self._train_lock:
            try:
                events = await self._events(self.params.history_days * 86400.0)
                if events.empty:
                    self.last_error = "no requests logged yet"
                    return None
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    self._pool, train_run, events, self.params, str(self.models_dir),
                    self.settings.keep_runs, 1, time.time())
            except Exception as exc:  # a failed run must not stop the schedule
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("forecaster: training failed; the previous model keeps serving")
                return None
            self.store.put_rows("training_runs", [result.training_run_row()])
            self.last_result = result
            self.last_error = None
            if result.accepted:
                self.forecaster = await asyncio.to_thread(HeatForecaster.load, Path(result.artifact_path))
                log.info("forecaster: run %s serving (%d models)", result.run_id, result.n_models)
            else:
                log.warning("forecaster: run %s %s", result.run_id, result.reason)
            return result

    async def forecast_now(self) -> pd.DataFrame | None:
        """Forecast the next horizon windows, log them to ``forecasts`` and hand them to the planner."""
        forecaster = self.forecaster
        if forecaster is None:
            return None
        horizon = int(self.settings.horizon_windows)
        now = time.time()
        try:
            events = await self._events(2 * 86400.0 + horizon * forecaster.params.window_s)
            frame = await asyncio.to_thread(forecaster.predict, events, now, horizon)
        except Exception:
            log.exception("forecaster: forecast failed")
            return None
        self.store.put_rows("forecasts", forecast_rows(frame, forecaster.run_id, now))
        if self.on_forecast is not None:
            await self.on_forecast(frame)
        return frame

    async def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        await asyncio.to_thread(self._pool.shutdown, True, cancel_futures=True)


def start_scheduler(settings: Settings, store: Any, on_forecast: OnForecast | None = None, *,
                    train_if_untrained: bool = True) -> ForecastScheduler:
    """Load the latest good model and start the jobs on the running event loop.

    With no trained model yet, one training run starts right away (when
    ``train_if_untrained``) instead of leaving the service without forecasts
    until the next cron tick.
    """
    sched = ForecastScheduler(settings, store, on_forecast)
    sched.load_latest()
    sched.start(train_at_start=train_if_untrained and sched.forecaster is None)
    return sched
