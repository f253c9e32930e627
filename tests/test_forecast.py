"""The heat forecaster: series, fallbacks, predictions for new models and users, artifacts, backtest rules."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from prewarm.forecast import (
    ForecastParams,
    HeatForecaster,
    SeasonalConfig,
    TraceError,
    count_matrix,
    format_table,
    is_worse,
    latest_run,
    load_latest,
    load_trace,
    prune,
    read_manifest,
    run_dirs,
    set_latest,
    train_run,
)
from prewarm.forecast.backtest import backtest  # the package's name `backtest` is its module
from prewarm.forecast.idle import ModelTimes
from prewarm.forecast.series import before
from prewarm.workload import EPOCH_START, synth, write_trace

DAY = 86400.0
COLUMNS = ["model", "window_start", "window_end", "expected_requests", "p_any", "lower", "upper"]


def small_params(**kw) -> ForecastParams:
    base = dict(combiner_days=1.0, min_combiner_days=1.0, backtest_days=1.0, hgb_max_iter=40,
                seasonal=SeasonalConfig(min_arima_days=1.5))
    base.update(kw)
    return ForecastParams(**base)


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return synth(models=6, users=60, days=4, seed=11, rate=3.0)


@pytest.fixture(scope="module")
def fitted(events: pd.DataFrame) -> HeatForecaster:
    return HeatForecaster.fit(events, EPOCH_START + 3 * DAY, small_params())


# ---------------------------------------------------------------- series
def test_trace_reader_accepts_seconds_and_iso_timestamps(tmp_path) -> None:
    df = pd.DataFrame({"ts": [120.5, 0.0, 60.0], "model": ["b", "a", "a"], "user": ["u1", None, "u2"]})
    write_trace(df, tmp_path / "t.parquet")
    got = load_trace(tmp_path / "t.parquet")
    assert list(got["ts"]) == [0.0, 60.0, 120.5]  # sorted
    assert got["user"].iloc[0] is None
    (tmp_path / "iso.csv").write_text("ts,model\n2026-11-02T00:01:00Z,a\n2026-11-02T00:00:00Z,b\n")
    iso = load_trace(tmp_path / "iso.csv")
    assert list(iso["ts"]) == [EPOCH_START, EPOCH_START + 60]
    assert list(iso["model"]) == ["b", "a"]


def test_trace_reader_names_what_is_wrong(tmp_path) -> None:
    (tmp_path / "nomodel.csv").write_text("ts,user\n1,u\n")
    with pytest.raises(TraceError, match="lacks column.*model"):
        load_trace(tmp_path / "nomodel.csv")
    with pytest.raises(TraceError, match="not found"):
        load_trace(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(TraceError, match="cannot read"):
        load_trace(tmp_path / "junk.parquet")


def test_count_matrix_puts_every_event_in_its_window() -> None:
    ev = pd.DataFrame({"ts": [0.0, 10.0, 299.9, 300.0, 900.0], "model": ["a", "b", "a", "a", "b"],
                       "user": [None] * 5})
    cm = count_matrix(ev, 0, 4, 300.0)
    assert cm.models == ["a", "b"]
    np.testing.assert_array_equal(cm.counts, [[2, 1, 0, 0], [1, 0, 0, 1]])
    only_b = count_matrix(ev, 1, 4, 300.0, models=["b", "zzz"])
    np.testing.assert_array_equal(only_b.counts, [[0, 0, 1], [0, 0, 0]])


# ---------------------------------------------------------------- fitting and fallbacks
def test_methods_follow_the_amount_of_data() -> None:
    rng = np.random.default_rng(0)
    n = int(3 * DAY / 300)
    busy = np.sort(EPOCH_START + rng.uniform(0, 3 * DAY, 3000))
    sparse_ = np.sort(EPOCH_START + rng.uniform(0, 3 * DAY, 40))
    young = np.sort(EPOCH_START + 3 * DAY - rng.uniform(0, 0.3 * DAY, 30))
    ev = pd.DataFrame({
        "ts": np.concatenate([busy, sparse_, young]),
        "model": ["busy:7b"] * len(busy) + ["sparse:1b"] * len(sparse_) + ["young:3b"] * len(young),
        "user": None,
    }).sort_values("ts", kind="stable").reset_index(drop=True)
    f = HeatForecaster.fit(ev, EPOCH_START + n * 300, small_params())
    methods = f.fit_report["methods"]
    assert methods["busy:7b"] in ("arima", "harmonic")
    assert methods["sparse:1b"] == "daily_profile"
    assert methods["young:3b"] == "smoothed_rate"
    assert sum(f.fit_report["method_counts"].values()) == 3


def test_too_little_data_skips_the_combiner_but_still_predicts() -> None:
    ev = pd.DataFrame({"ts": EPOCH_START + np.arange(0, 3600, 60.0), "model": "m:1b", "user": "u"})
    f = HeatForecaster.fit(ev, EPOCH_START + 3600, ForecastParams())
    assert "combiner" in f.fit_report and f.combiner is None
    out = f.predict(ev, EPOCH_START + 3600, 3)
    assert len(out) == 3 and out["expected_requests"].iloc[0] > 0


def test_a_short_history_trains_the_combiner_on_its_later_half() -> None:
    """Eight hours (no "same window yesterday" anywhere): the combiner still learns how far to follow the last
    windows, so of two models with the same 280 requests, the one silent for the last hour is forecast lower."""
    rng = np.random.default_rng(0)
    hour = 3600.0
    stopped = EPOCH_START + np.sort(rng.uniform(0, 7 * hour, 280))
    steady = EPOCH_START + np.sort(rng.uniform(0, 8 * hour, 280))
    ev = pd.DataFrame({"ts": np.concatenate([stopped, steady]), "model": ["stopped:1b"] * 280 + ["steady:1b"] * 280,
                       "user": "u"}).sort_values("ts").reset_index(drop=True)
    end = EPOCH_START + 8 * hour
    f = HeatForecaster.fit(ev, end, ForecastParams())
    assert f.combiner is not None and f.fit_report["combiner_rows"] > 0
    out = f.predict(ev, end, 1).set_index("model")["expected_requests"]
    assert out["stopped:1b"] < out["steady:1b"]


def test_idle_times_give_where_the_next_request_falls() -> None:
    """Worked by hand: gaps of exactly 600 s (four of them) and, for another model, of 1 s. The open gap counts as
    one more, longer than all: S(x) = (4 (1 - F(x)) + 1) / 5."""
    ev = pd.DataFrame({"ts": np.concatenate([np.arange(5) * 600.0, 10_000 + np.arange(5.0)]),
                       "model": ["timer"] * 5 + ["burst"] * 5, "user": None}).sort_values("ts")
    idle = ModelTimes.of(ev, ["timer", "burst", "never"]).idle_times()
    assert list(idle.counts) == [4, 4, 0] and idle.last[0] == 2400 and idle.last[2] == -np.inf
    rows = np.array([0, 0, 1, 2])
    age = np.array([550.0, 550.0, 1200.0, np.nan])
    p = idle.next_within(rows, age, np.array([0.0, 300.0, 0.0, 0.0]), np.array([300.0, 600.0, 300.0, 300.0]))
    # the timer, idle 550 s: S(550) = 1, S(850) = 1/5, so 4/5 in the next 300 s and none in the 300 after
    # the burst model, idle past every gap it ever had: S is 1/5 throughout, so nothing said; never seen: 0
    assert p == pytest.approx([0.8, 0.0, 0.0, 0.0])
    ages = ModelTimes.of(ev, ["timer", "never"]).ages_at(np.array([[0.0, 700.0], [5.0, 6.0]]))
    assert ages[0, 1] == 100.0 and np.isnan(ages).sum() == 3


def test_a_timer_is_forecast_where_its_period_puts_the_next_call() -> None:
    """A function called every 600 s: at a window start 583 s after its last call, its next one is 17 s away
    (window 0); 283 s after it, 317 s away (window 1). The lag counts read the same at both; idle age does not."""
    hour = 3600.0
    rng = np.random.default_rng(1)
    ts, names = [EPOCH_START + 17.0 + np.arange(0, 8 * hour, 600.0)], ["timer:1b"]
    for i in range(20):  # more timers at other phases, and steady models, for the combiner to learn from
        ts += [EPOCH_START + rng.uniform(0, 600) + np.arange(0, 8 * hour, 600.0),
               EPOCH_START + np.sort(rng.uniform(0, 8 * hour, 200))]
        names += [f"t{i}:1b", f"o{i}:1b"]
    ev = pd.DataFrame({"ts": np.concatenate(ts), "model": np.repeat(names, [len(t) for t in ts]),
                       "user": "u"}).sort_values("ts").reset_index(drop=True)
    end = EPOCH_START + 8 * hour
    f = HeatForecaster.fit(ev, end, ForecastParams())
    assert f.combiner is not None
    late = EPOCH_START + 7 * hour  # last call at 7 h - 583 s
    early = late + 300.0  # last call 283 s ago
    due = f.predict(before(ev, late), late, 2).query("model == 'timer:1b'")["expected_requests"].to_numpy()
    not_yet = f.predict(before(ev, early), early, 2).query("model == 'timer:1b'")["expected_requests"].to_numpy()
    assert due[0] > due[1] and not_yet[0] < not_yet[1] and due[0] > not_yet[0]


def test_predict_shape_alignment_and_ranges(events, fitted) -> None:
    now = EPOCH_START + 3 * DAY + 1234.0
    out = fitted.predict(events, now, 12)
    assert list(out.columns) == COLUMNS
    assert len(out) == len(fitted.models) * 12
    assert out["window_start"].min() == np.floor(now / 300) * 300
    assert np.allclose(out["window_end"] - out["window_start"], 300)
    assert out["p_any"].between(0, 1).all()
    assert (out["lower"] <= out["upper"]).all() and (out["expected_requests"] >= 0).all()


def test_predict_ignores_events_at_or_after_now(events, fitted) -> None:
    now = EPOCH_START + 3 * DAY + 3600
    past = events[events["ts"] < now]
    future = pd.DataFrame({"ts": now + np.arange(50.0), "model": past["model"].iloc[0], "user": "x"})
    both = pd.concat([past, future], ignore_index=True)
    pd.testing.assert_frame_equal(fitted.predict(past, now, 6), fitted.predict(both, now, 6))


def test_new_models_and_new_users_do_not_break_predict(events, fitted) -> None:
    now = EPOCH_START + 3 * DAY + 7200
    extra = pd.DataFrame({"ts": now - np.arange(1.0, 40.0), "model": "brand-new:1b", "user": "stranger"})
    anon = pd.DataFrame({"ts": now - np.arange(0.5, 10.0), "model": fitted.models[0], "user": None})
    ev = pd.concat([events[events["ts"] < now], extra, anon]).sort_values("ts", kind="stable")
    out = fitted.predict(ev, now, 4)
    assert set(fitted.models) | {"brand-new:1b"} == set(out["model"])
    new = out[out["model"] == "brand-new:1b"]
    assert (new["expected_requests"] > 0).all() and (new["p_any"] > 0).all()


def test_recent_demand_raises_the_forecast(events, fitted) -> None:
    now = EPOCH_START + 3 * DAY + 5 * 3600  # Thursday 05:00 UTC: quiet hours for most users
    quiet = events[events["ts"] < now - 3600]
    model = fitted.models[-1]
    burst = pd.DataFrame({"ts": now - np.linspace(1, 3000, 120), "model": model, "user": "burster"})
    hot = pd.concat([quiet, burst]).sort_values("ts", kind="stable")
    cold_p = fitted.predict(quiet, now, 1).set_index("model")["p_any"][model]
    hot_p = fitted.predict(hot, now, 1).set_index("model")["p_any"][model]
    assert hot_p > cold_p


# ---------------------------------------------------------------- artifacts
def test_save_load_round_trip(tmp_path, events, fitted) -> None:
    fitted.save(tmp_path / "run1")
    again = HeatForecaster.load(tmp_path / "run1")
    now = EPOCH_START + 3 * DAY + 600
    pd.testing.assert_frame_equal(fitted.predict(events, now, 5), again.predict(events, now, 5))
    manifest = json.loads((tmp_path / "run1" / "manifest.json").read_text())
    assert {"params", "versions", "data_range", "fit_report"} <= set(manifest)
    assert manifest["versions"]["statsmodels"]


def test_an_artifact_from_before_idle_times_is_refused_in_one_line(tmp_path, fitted) -> None:
    import copy
    old = copy.copy(fitted)
    del old.idle  # what a format-1 artifact unpickles to
    old.save(tmp_path / "run0")
    with pytest.raises(ValueError, match="older prewarm"):
        HeatForecaster.load(tmp_path / "run0")


def test_latest_pointer_and_keep_last_n(tmp_path, fitted) -> None:
    for i in range(5):
        fitted.save(tmp_path / f"2026010{i}T000000Z-aaaaaa")
    runs = run_dirs(tmp_path)
    set_latest(tmp_path, runs[1])  # an older run is the good one
    gone = prune(tmp_path, keep=2)
    left = run_dirs(tmp_path)
    assert runs[1] in left and runs[-1] in left and runs[-2] in left
    assert len(gone) == 2 and all(not g.exists() for g in gone)
    assert latest_run(tmp_path) == runs[1]
    assert isinstance(load_latest(tmp_path), HeatForecaster)


def test_load_latest_without_a_run_says_what_to_do(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="prewarm train"):
        load_latest(tmp_path)


# ---------------------------------------------------------------- backtest and the keep-previous rule
def test_backtest_scores_every_variant(events) -> None:
    metrics, f = backtest(events, small_params())
    assert f is not None
    assert set(metrics["variants"]) == {"combined", "arima_user", "arima", "seasonal_naive", "moving_average"}
    for s in metrics["variants"].values():
        assert s["mae"] >= 0 and s["poisson_deviance"] >= 0 and 0 <= s["brier"] <= 1
    assert metrics["holdout"]["windows"] == 288
    assert sum(b["n"] for b in metrics["calibration"]) == metrics["holdout"]["rows"]
    assert "combined" in format_table(metrics)


def test_is_worse_compares_skill_over_the_naive_baseline() -> None:
    good = {"skill": {"mae": 0.3, "brier": 0.3}}
    assert is_worse({"skill": {"mae": 0.1, "brier": 0.3}}, good)
    assert is_worse({"skill": {"mae": 0.3, "brier": 0.2}}, good)
    assert not is_worse({"skill": {"mae": 0.28, "brier": 0.31}}, good)
    assert not is_worse({"skill": {"mae": -1.0, "brier": -1.0}}, None)
    assert not is_worse({"skipped": "too little data"}, good)


def test_a_worse_run_keeps_the_previous_one_serving(tmp_path, events) -> None:
    first = train_run(events, small_params(), tmp_path, keep_runs=5)
    assert first.accepted and latest_run(tmp_path).name == first.run_id
    manifest_path = tmp_path / first.run_id / "manifest.json"
    manifest = read_manifest(tmp_path / first.run_id)
    manifest["metrics"]["skill"] = {"mae": 0.99, "brier": 0.99}  # the serving run did far better
    manifest_path.write_text(json.dumps(manifest))
    second = train_run(events, small_params(), tmp_path, keep_runs=5)
    assert not second.accepted and "rejected" in second.reason
    assert latest_run(tmp_path).name == first.run_id
    assert (tmp_path / second.run_id / "manifest.json").is_file()
    row = second.training_run_row()
    assert json.loads(row["metrics"])["accepted"] is False
