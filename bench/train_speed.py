"""Training and prediction speed of the forecaster, against baselines measured in the same run.

* `prewarm train`'s work (backtest + fit + artifact) on the synthetic 14-day,
  100-model, 1000-user workload, with the process pool of 2 it uses and
  serially (the baseline): the issue's target is <= 60 s on a 2-core machine.
* predict() for ~300 models x 12 windows (the replay calls it every window),
  next to the seasonal-naive baseline computed from the same events.

Run: .venv/bin/python bench/train_speed.py [--skip-serial]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from prewarm.forecast import ForecastParams, HeatForecaster, count_matrix, train_run
from prewarm.workload import synth


def timed_train(events, workers: int) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        result = train_run(events, ForecastParams(), d, workers=workers)
        return time.perf_counter() - t, result.metrics


def predict_ms(f: HeatForecaster, events, start: float, calls: int = 30) -> tuple[float, float]:
    times, naive = [], []
    for i in range(calls):
        now = start + i * 300.0
        t = time.perf_counter()
        f.predict(events, now, 12)
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        n0 = int(now // 300)
        count_matrix(events, n0 - 288, n0 - 276, 300.0, models=f.models)
        naive.append(time.perf_counter() - t)
    return 1000 * float(np.median(times)), 1000 * float(np.median(naive))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-serial", action="store_true", help="do not run the serial baseline")
    args = ap.parse_args()

    events = synth(models=100, users=1000, days=14, seed=1)
    wall, metrics = timed_train(events, workers=2)
    print(f"train, 14 d x 100 models x 1000 users ({len(events)} requests), pool of 2: {wall:.1f} s "
          f"(skill vs seasonal-naive: {metrics.get('skill')})")
    if not args.skip_serial:
        serial, _ = timed_train(events, workers=1)
        print(f"train, same data, serial (baseline): {serial:.1f} s  -> pool speed-up {serial / wall:.2f}x")

    big = synth(models=300, users=1500, days=7, seed=2)
    end = float(big["ts"].iloc[-1])
    f = HeatForecaster.fit(big, end - 86400, ForecastParams(combiner_days=2.0))
    ms, naive_ms = predict_ms(f, big, end - 86400)
    print(f"predict, {len(f.models)} models x 12 windows: median {ms:.1f} ms "
          f"(seasonal-naive counts from the same frame: {naive_ms:.1f} ms)")


if __name__ == "__main__":
    main()
