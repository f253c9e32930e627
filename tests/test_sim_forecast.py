"""The forecast policy: trained on the warm-up only, and blind to everything after the instant it plans for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prewarm.catalog import load_catalog
from prewarm.sim import ForecastOptions, ModelCosts, Span, frame_to_trace, run_replays

DAY = 86400.0


def _periodic_events(days: float, seed: int) -> pd.DataFrame:
    """Three models with hourly bursts at fixed minutes, one user each."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, (model, minute) in enumerate([("llama3.1:8b", 5), ("qwen2.5:7b", 25), ("mistral:7b", 45)]):
        for h in range(int(days * 24)):
            if rng.random() < 0.9:
                start = h * 3600 + minute * 60
                for t in start + np.cumsum(rng.exponential(20, size=5)):
                    rows.append((float(t), model, f"u{k}"))
    df = pd.DataFrame(rows, columns=["ts", "model", "user"]).sort_values("ts", kind="stable")
    return df.reset_index(drop=True)


def _replay(df: pd.DataFrame):
    tr = frame_to_trace(df)
    costs = ModelCosts.from_catalog(tr, load_catalog(None))
    span = Span(1.5 * DAY, float(tr.ts[-1]))
    [res] = run_replays(tr, costs, [12 * 10**9], ["forecast"], span, ForecastOptions(retrain_every_s=DAY))
    return tr, res


def test_forecast_policy_never_sees_the_future():
    base = _periodic_events(2.5, seed=3)
    cut = 2.0 * DAY
    changed = pd.concat([
        base[base.ts < cut],
        pd.DataFrame({"ts": cut + np.arange(200) * 30.0, "model": "zzz-late:1b", "user": "late"}),
    ]).sort_values("ts", kind="stable").reset_index(drop=True)
    tr1, r1 = _replay(base)
    tr2, r2 = _replay(changed)

    def before_cut(tr, res):
        return sorted((tr.names[iv.model], round(iv.start, 6)) for iv in res.timeline if iv.start < cut)

    assert r1.extra["fits"] >= 1
    assert before_cut(tr1, r1) == before_cut(tr2, r2)
    assert len(before_cut(tr1, r1)) > 0


def test_forecast_policy_is_trained_on_the_warm_up_and_refit_daily():
    df = _periodic_events(2.7, seed=4)
    tr, res = _replay(df)
    assert res.extra["train_end"] == 1.5 * DAY
    assert res.extra["fits"] == 1 + 1  # at 1.5 d, then once a day of trace time later
    assert res.extra["train_seconds"] > 0 and res.requests > 0


def _planned_replay(requests: list[tuple[float, str]], rates: dict[str, float], budget_gb: int = 10,
                    vram_cost: float = 0.0):
    """1 GB models loading in 100 s; one plan at t=10 with the given forecast rates (requests per second)."""
    from prewarm.planner import Outlook
    from prewarm.sim.engine import replay
    from prewarm.sim.policies.forecast import ForecastPolicy, ForecastSchedule, WindowForecast

    df = pd.DataFrame({"ts": [t for t, _ in requests], "model": [m for _, m in requests], "user": "u"})
    tr = frame_to_trace(df)
    schedule = ForecastSchedule(tr, train_end=0.0, window_s=300.0, retrain_every_s=DAY)
    schedule.windows = [WindowForecast(10.0, Outlook.flat({tr.names.index(m): r for m, r in rates.items()}))]
    schedule._done = True
    n = tr.n_models
    pol = ForecastPolicy(schedule, vram_cost)
    res = replay(tr, [10**9] * n, [100.0] * n, budget_gb * 10**9, pol, Span(0.0, float(tr.ts[-1])),
                 record_timeline=True)
    return tr, res


def test_forecast_prefetches_only_when_the_loader_would_idle():
    # at the plan (t=10) a is loading and b waits behind it: d (forecast busy) is prefetched when b's load is
    # done (t=200), not queued in front of or behind the on-demand loads at 10
    tr, res = _planned_replay([(0.0, "a"), (1.0, "b"), (5000.0, "d")], {"d": 0.01})
    d = [iv for iv in res.timeline if tr.names[iv.model] == "d"]
    assert [iv.start for iv in d] == [200.0]
    assert res.cold_starts == 2 and res.extra["prefetches"] == 1


def test_a_prefetch_displaces_only_models_worth_less():
    # budget 2 GB, a and b resident. The forecast says d is busier than a (a is quiet): d replaces a. Said less
    # busy than both, d is left to load on demand.
    reqs = [(0.0, "a"), (1.0, "b"), (5000.0, "d"), (5001.0, "b")]
    tr, res = _planned_replay(reqs, {"a": 0.0001, "b": 0.01, "d": 0.001}, budget_gb=2)
    assert res.cold_starts == 2  # a and b; d warm, b never evicted
    tr, res = _planned_replay(reqs, {"a": 0.01, "b": 0.01, "d": 0.001}, budget_gb=2)
    assert res.extra["prefetches"] == 0 and res.cold_starts == 3


def test_vram_cost_lets_models_go_that_do_not_earn_their_memory():
    # a is asked for once; forecast rate 1e-4/s: worth = 1e-4 x 100 s x 3600 / 1 GB = 36 s per GB-hour
    reqs = [(0.0, "a"), (400.0, "a")]
    _, free = _planned_replay(reqs, {"a": 1e-4}, vram_cost=0.0)
    _, cheap = _planned_replay(reqs, {"a": 1e-4}, vram_cost=30.0)
    _, dear = _planned_replay(reqs, {"a": 1e-4}, vram_cost=40.0)
    assert free.cold_starts == cheap.cold_starts == 1  # kept: worth 36 >= 30
    assert dear.cold_starts == 2 and dear.vram_gb_hours < free.vram_gb_hours  # let go once loaded (t=100)


def test_the_ablations_are_the_forecast_policy_with_a_part_taken_out() -> None:
    from prewarm.forecast.model import ForecastParams
    from prewarm.sim.policies.forecast import (
        ForecastNoSeasonalPolicy,
        ForecastNoUsersPolicy,
        ForecastPolicy,
        ForecastRecencyPolicy,
        RecencySchedule,
    )

    for cls in (ForecastRecencyPolicy, ForecastNoUsersPolicy, ForecastNoSeasonalPolicy):
        assert set(vars(cls)) - {"__module__", "__doc__", "__qualname__", "name"} == set()
        assert issubclass(cls, ForecastPolicy)
    tr = frame_to_trace(pd.DataFrame({"ts": [0.0, 10.0], "model": ["a", "b"]}))
    assert RecencySchedule(tr, 0.0, 300.0, DAY).compute() == []  # no forecast: decayed counts only
    with pytest.raises(ValueError, match="unknown part"):
        ForecastParams(without=("weather",))


def test_recorded_forecasts_replay_exactly_as_the_same_forecasts_computed(tmp_path):
    """`prewarm replay --forecasts`: the forecasts frames the truth gives, written to a file with their
    made_at and read back, plan the same decisions as forecast-perfect computing them in the replay."""
    from prewarm.forecast.series import load_forecasts
    from prewarm.sim.policies.forecast import PerfectSchedule

    tr = frame_to_trace(_periodic_events(2.5, seed=5))
    costs = ModelCosts.from_catalog(tr, load_catalog(None))
    span = Span(1.5 * DAY, float(tr.ts[-1]))
    truth = PerfectSchedule(tr, span.scored_from, 300.0, DAY)
    frames = []
    for w in truth.compute():
        frame = truth.frame_at(w.at, int(np.searchsorted(tr.ts, w.at, side="left")))
        assert frame is not None
        frames.append(frame.assign(made_at=w.at))
    path = tmp_path / "forecasts.csv"
    pd.concat(frames).to_csv(path, index=False)
    recorded = load_forecasts(path)
    assert recorded["made_at"].nunique() == len(frames)
    [computed] = run_replays(tr, costs, [12 * 10**9], ["forecast-perfect"], span, timeline_for=None)
    [replayed] = run_replays(tr, costs, [12 * 10**9], ["forecast"], span, ForecastOptions(recorded=recorded),
                             timeline_for=None)
    assert replayed.extra.get("fits", 0) == 0
    for field in ("cold_starts", "loads", "evictions", "added_latency_s_total", "vram_gb_hours"):
        assert getattr(replayed, field) == pytest.approx(getattr(computed, field)), field
    assert replayed.extra["prefetches"] == computed.extra["prefetches"] > 0
    assert replayed.extra["forecast_windows"] == computed.extra["forecast_windows"]


def test_recorded_forecasts_without_their_columns_are_refused_in_one_line(tmp_path):
    from prewarm.forecast.series import TraceError, load_forecasts

    path = tmp_path / "f.csv"
    path.write_text("model,window_start\nm,1\n")
    with pytest.raises(TraceError, match="lack column.*made_at.*window_end.*expected_requests"):
        load_forecasts(path)
