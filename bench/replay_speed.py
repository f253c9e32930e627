"""Replay speed: a seeded synthetic trace (default 1M requests over 100 models), every policy timed.

The issue's target: all policies but forecast replay 1M requests over 100 models in
<= 60 s in total on the 2-core dev machine. The forecast policy's training and
prediction time is reported apart (--forecast; it fits the real HeatForecaster).

    .venv/bin/python bench/replay_speed.py [--requests 1000000] [--models 100] [--forecast]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from prewarm.sim import ForecastOptions, ModelCosts, Span, frame_to_trace, run_replays


def synthetic(n: int, models: int, days: float, seed: int) -> pd.DataFrame:
    """Zipf popularity with a daily cycle: enough structure for every policy to do real work."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, models + 1) ** 1.1
    pop /= pop.sum()
    span = days * 86400.0
    u = rng.uniform(0, span, size=n * 2)
    keep = rng.uniform(size=u.size) < 0.5 + 0.45 * np.sin(2 * np.pi * u / 86400.0)
    ts = np.sort(u[keep][:n])
    mid = rng.choice(models, size=len(ts), p=pop)
    names = np.array([f"model-{k:03d}:{1 + k % 8}b" for k in range(models)])
    return pd.DataFrame({"ts": ts, "model": names[mid], "user": None})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--budget", default="80GB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--forecast", action="store_true", help="also time the forecast policy (fits the forecaster)")
    args = ap.parse_args()
    from prewarm.catalog import load_catalog
    from prewarm.units import parse_size

    t = time.perf_counter()
    trace = frame_to_trace(synthetic(args.requests, args.models, args.days, args.seed), "synthetic")
    costs = ModelCosts.from_catalog(trace, load_catalog(None))
    span = Span.from_warmup(trace, 0.3)
    print(f"trace: {len(trace)} requests, {trace.n_models} models, {args.days:g} days "
          f"(generated in {time.perf_counter() - t:.1f} s); budget {args.budget}")
    budget = parse_size(args.budget)
    total = 0.0
    for name in ("ollama", "lru", "topn", "histogram", "oracle"):
        t = time.perf_counter()
        [r] = run_replays(trace, costs, [budget], [name], span)
        dt = time.perf_counter() - t
        total += dt
        print(f"{name:>10}: {dt:6.2f} s  ({1e6 * dt / len(trace):.2f} us/request)  "
              f"cold {100 * r.cold_start_rate:.2f} %")
    print(f"{'total':>10}: {total:6.2f} s for 5 policies (target <= 60 s)")
    if args.forecast:
        t = time.perf_counter()
        [r] = run_replays(trace, costs, [budget], ["forecast"], span, ForecastOptions())
        dt = time.perf_counter() - t
        e = r.extra
        print(f"{'forecast':>10}: {dt:6.2f} s total: training {e['train_seconds']:.1f} s over {e['fits']} fits, "
              f"predicting {e['predict_seconds']:.1f} s over {e['forecast_windows']} windows, "
              f"replay {dt - e['train_seconds'] - e['predict_seconds']:.1f} s; cold {100 * r.cold_start_rate:.2f} %")


if __name__ == "__main__":
    main()
