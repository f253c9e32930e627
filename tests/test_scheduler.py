"""The service's schedule: training in a worker process, results through the Store, the previous model kept on failure."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime

import pandas as pd
import pytest

from prewarm.config import load_settings
from prewarm.scheduler import ForecastScheduler, start_scheduler
from prewarm.store import Store
from prewarm.workload import synth


@pytest.fixture
async def service(tmp_path):
    settings = load_settings(overrides={"db": str(tmp_path / "p.duckdb"), "models_dir": str(tmp_path / "models"),
                                        "horizon_windows": 4, "train_cron": "17 3 * * *"})
    store = Store(settings.db, settings)
    store.open()
    ev = synth(models=4, users=30, days=3, seed=2, rate=3.0)
    shift = time.time() - 120 - float(ev["ts"].max())
    store.put_rows("requests", [
        {"id": str(i), "ts_start": datetime.fromtimestamp(t + shift, tz=UTC), "model": m, "user_id": u,
         "api": "ollama", "endpoint": "/api/chat", "stream": False, "status": 200}
        for i, (t, m, u) in enumerate(zip(ev["ts"], ev["model"], ev["user"], strict=False))
    ])
    await store.flush()
    yield settings, store
    await store.close()


async def scalar(store: Store, sql: str):
    _, rows = await store.query(sql)
    return rows[0][0]


async def test_training_runs_in_a_worker_process_and_results_reach_the_store(service) -> None:
    settings, store = service
    seen: list[pd.DataFrame] = []

    async def on_forecast(frame: pd.DataFrame) -> None:
        seen.append(frame)

    sched = ForecastScheduler(settings, store, on_forecast)
    try:
        result = await sched.train_now()
        assert result is not None, sched.last_error
        assert result.pid != os.getpid()
        assert result.accepted and sched.forecaster is not None
        frame = await sched.forecast_now()
        assert seen and seen[0] is frame
        assert len(frame) == 4 * len(sched.forecaster.models)
        await store.flush()
        assert await scalar(store, "SELECT count(*) FROM training_runs") == 1
        assert await scalar(store, "SELECT count(*) FROM forecasts") == len(frame)
        # the view scores only forecasts made before their window began: all but the current window
        models = len(sched.forecaster.models)
        assert await scalar(store, "SELECT count(*) FROM v_forecast_vs_actual") == 3 * models
        methods = await scalar(store, "SELECT metrics->>'$.methods' FROM training_runs")
        assert "arima" in methods or "daily_profile" in methods
    finally:
        await sched.stop()


async def test_a_failed_run_keeps_the_previous_model_serving(service, tmp_path) -> None:
    settings, store = service
    sched = ForecastScheduler(settings, store)
    try:
        assert await sched.train_now() is not None
        serving = sched.forecaster
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("x")
        sched.models_dir = blocker  # the next run cannot write its artifact
        assert await sched.train_now() is None
        assert sched.forecaster is serving and sched.last_error
        assert await sched.forecast_now() is not None
    finally:
        await sched.stop()


async def test_start_scheduler_uses_the_configured_cron_and_window(service) -> None:
    settings, store = service
    sched = start_scheduler(settings, store, train_if_untrained=False)
    try:
        jobs = {j.id: j for j in sched._scheduler.get_jobs()}
        assert set(jobs) == {"train", "forecast"}
        assert jobs["forecast"].next_run_time.timestamp() % settings.window == 0
        fields = {f.name: str(f) for f in jobs["train"].trigger.fields}
        assert fields["minute"] == "17" and fields["hour"] == "3"
        assert jobs["forecast"].trigger.interval.total_seconds() == settings.window
        assert sched.forecaster is None  # nothing trained yet: forecasting waits for the first run
        assert await sched.forecast_now() is None
    finally:
        await sched.stop()


async def test_an_untrained_service_trains_at_start(service) -> None:
    settings, store = service
    sched = start_scheduler(settings, store)
    try:
        for _ in range(600):
            if sched.last_result is not None or sched.last_error is not None:
                break
            await asyncio.sleep(0.1)
        assert sched.last_result is not None and sched.forecaster is not None, sched.last_error
    finally:
        await sched.stop()
