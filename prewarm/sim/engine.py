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

from prewarm.sim.device import Interval, SimGPU
from prewarm.sim.policies.base import Policy
from prewarm.sim.trace import Trace


@dataclass
class Span:
    """The scored part of a trace: requests with scored_from <= ts <= scored_to count."""

    scored_from: float
    scored_to: float

    @classmethod
    def from_warmup(cls, trace: Trace, warmup: float) -> Span:
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
    request_cold: list[bool] = field(default_factory=list)  # per trace request, with the timeline only (the plot)

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


def run_requests(policy: Policy, gpu: SimGPU, ts: list[float], mids: list[int], skip: list[bool] | None) -> None:
    """The event loop: before each request, the policy's timed actions and the GPU's load starts due by then,
    in time order (a policy action first on a tie, so a keep-alive that ends as a load starts frees its room).
    After the last request, queued loads still start so their waiting requests learn their wait."""
    request = policy.request
    for i, (t, m) in enumerate(zip(ts, mids, strict=False)):
        if skip is not None and skip[m]:
            continue
        while policy.next_event <= t or gpu.next_start <= t:
            if policy.next_event <= gpu.next_start:
                policy.advance(policy.next_event)
            else:
                gpu.start_next(gpu.next_start)
        request(i, m, t)
    while gpu.queue:
        gpu.start_next(gpu.next_start)


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
    n = len(trace)
    gpu = SimGPU(list(sizes), list(load_seconds), budget, span.scored_from, span.scored_to, n, record_timeline)
    policy.bind(gpu, trace)
    oversized = [s > budget for s in sizes]
    run_requests(policy, gpu, trace.ts.tolist(), trace.mid.tolist(), oversized if any(oversized) else None)
    policy.finish(span.scored_to)

    waits = np.asarray(gpu.wait, dtype=np.float64)
    unserved = np.isnan(waits)
    scored = (trace.ts >= span.scored_from) & (trace.ts <= span.scored_to)
    over_mask = np.asarray(oversized, dtype=np.bool_)[trace.mid]
    served = scored & ~over_mask & ~unserved
    w_scored = np.maximum(waits[served], 0.0)
    cold = waits[served] >= 0.0
    n_served = int(served.sum())
    over_ids = sorted({int(m) for m in np.unique(trace.mid[scored & over_mask])})
    extra = {"unserved_requests": int((scored & unserved).sum()), "failed_loads": gpu.failed_loads,
             "cancelled_loads": gpu.cancelled}
    extra.update(policy.report())
    return ReplayResult(
        policy=policy.name,
        budget=budget,
        requests=n_served,
        cold_starts=int(cold.sum()),
        added_latency_s_total=float(w_scored.sum()),
        p99_added_latency_s=float(np.percentile(w_scored, 99)) if n_served else 0.0,
        mean_added_latency_s=float(w_scored.mean()) if n_served else 0.0,
        vram_gb_hours=gpu.vram_gb_hours,
        loads=gpu.loads,
        evictions=gpu.evictions,
        scored_from=span.scored_from,
        scored_to=span.scored_to,
        oversized_requests=int((scored & over_mask).sum()),
        oversized_models=[trace.names[m] for m in over_ids],
        replay_seconds=time.perf_counter() - started,
        loader_utilization=gpu.loader_utilization,
        extra=extra,
        timeline=gpu.timeline,
        request_cold=(waits >= 0.0).tolist() if record_timeline else [],
    )
