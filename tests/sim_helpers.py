"""Shared helpers for the replay tests: tiny traces and a per-request driver."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prewarm.sim import SimGPU, Trace, frame_to_trace, run_requests
from prewarm.sim.policies import Policy


def make_trace(events: list[tuple[float, str]]) -> Trace:
    return frame_to_trace(pd.DataFrame({"ts": [t for t, _ in events], "model": [m for _, m in events]}))


def drive(policy: Policy, trace: Trace, sizes: dict[str, int], loads: dict[str, float], budget: int,
          span: tuple[float, float] = (0.0, 1e12)) -> tuple[list[float], SimGPU]:
    """Run the policy through the replay's event loop; returns each request's result (-1 warm, else added seconds)."""
    gpu = SimGPU([sizes[n] for n in trace.names], [loads[n] for n in trace.names], budget, span[0], span[1],
                 len(trace), record_timeline=True)
    policy.bind(gpu, trace)
    run_requests(policy, gpu, trace.ts.tolist(), trace.mid.tolist(), None)
    assert gpu.used <= budget
    policy.finish(float(trace.ts[-1]))
    return list(gpu.wait), gpu


def max_overlap(gpu: SimGPU) -> int:
    """Largest sum of sizes of models in VRAM (loading or resident) at any instant, from the timeline."""
    points = []
    for iv in gpu.timeline:
        points.append((iv.start, 1, gpu.sizes[iv.model]))
        points.append((iv.end, 0, -gpu.sizes[iv.model]))  # ends sort before starts at the same time
    cur = best = 0
    for _, _, d in sorted(points):
        cur += d
        best = max(best, cur)
    return best


def random_trace(seed: int, n: int = 3000, models: int = 12, days: float = 1.0) -> Trace:
    """A bursty, skewed trace: Zipf popularity, per-model on/off sessions, a daily cycle."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, models + 1) ** 1.2
    pop /= pop.sum()
    span = days * 86400.0
    ts, ms = [], []
    while len(ts) < n:
        m = int(rng.choice(models, p=pop))
        start = rng.uniform(0, span)
        k = int(rng.integers(1, 30))
        gaps = rng.exponential(rng.uniform(5, 120), size=k)
        for t in start + np.cumsum(gaps):
            if t < span:
                ts.append(float(t))
                ms.append(f"m{m:02d}")
    df = pd.DataFrame({"ts": ts[:n], "model": ms[:n]})
    return frame_to_trace(df)
