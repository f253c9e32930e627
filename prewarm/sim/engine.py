"""The replay loop: one pass over the trace per (policy, budget), and the metrics of the scored span.

The loop is deliberately plain: Python lists of floats and ints, one policy call
per request, and an array write only for cold starts, so a million requests
replay in seconds without per-request objects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prewarm.sim.gpu import Interval, SimGPU
from prewarm.sim.policies.base import Policy
from prewarm.sim.trace import Trace


@dataclass
class Span:
    """The scored part of a trace: requests with scored_from <= ts <= scored_to count."""

    scored_from: float
    scored_to: float

    @classmethod
    def from_warmup(cls, trace: Trace, warmup: float) -> "Span":
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"--warmup must be in [0, 1), got {warmup}")
        t0, t1 = float(trace.ts[0]), float(trace.ts[-1])
        return cls(t0 + warmup * (t1 - t0), t1)


@dataclass
class ReplayResult:
    policy: str
    budget: int
    requests: int
    cold_starts: int
    added_latency_s_total: float
    p99_added_latency_s: float
    mean_added_latency_s: float
    vram_gb_hours: float
    loads: int
    evictions: int
    scored_from: float
    scored_to: float
    oversized_requests: int
    oversized_models: list[str]
    replay_seconds: float
    loader_utilization: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    timeline: list[Interval] = field(default_factory=list)

    @property
    def cold_start_rate(self) -> float:
        return self.cold_starts / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = {
            "policy": self.policy,
            "budget": self.budget,
            "budget_gb": round(self.budget / 1e9, 3),
            "requests": self.requests,
            "cold_starts": self.cold_starts,
            "cold_start_rate": self.cold_start_rate,
            "added_latency_s_total": self.added_latency_s_total,
            "p99_added_latency_s": self.p99_added_latency_s,
            "mean_added_latency_s": self.mean_added_latency_s,
            "vram_gb_hours": self.vram_gb_hours,
            "loads": self.loads,
            "evictions": self.evictions,
            "scored_from": self.scored_from,
            "scored_to": self.scored_to,
            "oversized_requests": self.oversized_requests,
            "oversized_models": self.oversized_models,
            "loader_utilization": self.loader_utilization,
            "replay_seconds": self.replay_seconds,
        }
        d.update(self.extra)
        return d


def replay(
    trace: Trace,
    sizes: list[int],
    load_seconds: list[float],
    budget: int,
    policy: Policy,
    span: Span,
    record_timeline: bool = False,
) -> ReplayResult:
    """Run ``policy`` over the whole trace on a fresh simulated GPU; score only ``span``.

    Requests for a model larger than the whole budget cannot be served by any
    policy: they are counted apart (``oversized_requests``) and their models named,
    and the rest of the trace replays as if they were sent elsewhere.
    """
    started = time.perf_counter()
    gpu = SimGPU(list(sizes), list(load_seconds), budget, span.scored_from, span.scored_to, record_timeline)
    policy.bind(gpu, trace)
    oversized = [s > budget for s in sizes]
    ts_list = trace.ts.tolist()
    mid_list = trace.mid.tolist()
    waits = np.zeros(len(ts_list), dtype=np.float64)
    cold = np.zeros(len(ts_list), dtype=np.bool_)
    request = policy.request
    if any(oversized):
        for i, (t, m) in enumerate(zip(ts_list, mid_list)):
            if oversized[m]:
                continue
            w = request(i, m, t)
            if w >= 0.0:
                cold[i] = True
                waits[i] = w
    else:
        for i, (t, m) in enumerate(zip(ts_list, mid_list)):
            w = request(i, m, t)
            if w >= 0.0:
                cold[i] = True
                waits[i] = w
    policy.finish(span.scored_to)

    scored = (trace.ts >= span.scored_from) & (trace.ts <= span.scored_to)
    over_mask = np.asarray(oversized, dtype=np.bool_)[trace.mid]
    served = scored & ~over_mask
    w_scored = waits[served]
    n = int(served.sum())
    over_ids = sorted({int(m) for m in np.unique(trace.mid[scored & over_mask])})
    return ReplayResult(
        policy=policy.name,
        budget=budget,
        requests=n,
        cold_starts=int(cold[served].sum()),
        added_latency_s_total=float(w_scored.sum()),
        p99_added_latency_s=float(np.percentile(w_scored, 99)) if n else 0.0,
        mean_added_latency_s=float(w_scored.mean()) if n else 0.0,
        vram_gb_hours=gpu.vram_gb_hours,
        loads=gpu.loads,
        evictions=gpu.evictions,
        scored_from=span.scored_from,
        scored_to=span.scored_to,
        oversized_requests=int((scored & over_mask).sum()),
        oversized_models=[trace.names[m] for m in over_ids],
        replay_seconds=time.perf_counter() - started,
        loader_utilization=gpu.loader_utilization,
        extra=policy.report(),
        timeline=gpu.timeline,
    )
