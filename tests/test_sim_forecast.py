"""The forecast policy: trained on the warm-up only, and blind to everything after the instant it plans for."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prewarm.catalog import load_catalog
from prewarm.sim.engine import Span
from prewarm.sim.run import ForecastOptions, ModelCosts, run_replays
from prewarm.sim.trace import frame_to_trace

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


def _planned_prefetch_replay(requests: list[tuple[float, str]]):
    """Four 1 GB models loading in 100 s; one plan at t=10 forecasts d (first asked for at t=5000) at p=0.9."""
    from prewarm.sim.engine import replay
    from prewarm.sim.policies.forecast import ForecastPolicy, ForecastSchedule, WindowForecast

    df = pd.DataFrame({"ts": [t for t, _ in requests], "model": [m for _, m in requests], "user": "u"})
    tr = frame_to_trace(df)
    d = tr.names.index("d")
    schedule = ForecastSchedule(tr, train_end=0.0, window_s=300.0, retrain_every_s=DAY)
    schedule.windows = [WindowForecast(10.0, {d: (0.9, 0.0)})]
    schedule._done = True
    n = tr.n_models
    return replay(tr, [10**9] * n, [100.0] * n, 10 * 10**9, ForecastPolicy(schedule), Span(0.0, float(tr.ts[-1])),
                  record_timeline=True)


def test_forecast_plan_does_not_queue_prefetches_behind_an_on_demand_backlog():
    # at the plan (t=10) a is loading and b waits: one on-demand load queued, the prefetch of d may join
    one = _planned_prefetch_replay([(0.0, "a"), (1.0, "b"), (5000.0, "d")])
    # a loading, b and c waiting: the prefetch would only delay them, so d is left to load on demand
    two = _planned_prefetch_replay([(0.0, "a"), (1.0, "b"), (2.0, "c"), (5000.0, "d")])
    assert one.cold_starts == 2  # a and b; d was prefetched
    assert two.cold_starts == 4  # a, b, c and d


def test_forecast_prefetches_within_what_an_on_demand_cache_would_hold():
    # a and b asked for: an on-demand cache holds 2 GB of the 10 GB budget. The plan at t=10 wants d (p 0.9);
    # d is prefetched (its request at t=5000 is warm) but in the room of a or b, never as a third model.
    res = _planned_prefetch_replay([(0.0, "a"), (1.0, "b"), (5000.0, "d")])
    assert res.cold_starts == 2
    edges = sorted([(iv.start, 1) for iv in res.timeline] + [(iv.end, -1) for iv in res.timeline],
                   key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    assert most == 2
