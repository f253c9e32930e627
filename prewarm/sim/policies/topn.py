"""Static top-N, the approach prewarm grew out of.

Every ``interval_s`` (5 min) the models are ranked by their number of requests in
the last ``lookback_s`` (15 min); N is as many of them as fit the budget taken in
that order (the first that does not fit ends the list), and those N are queued for
loading if they are not present; queued prefetches that fell out of the top N are
withdrawn. Between re-evaluations a miss is loaded on demand as in
LRU; room is made by evicting models outside the top N first (least recently
used first), and only then top-N models (least recently used first).

Re-evaluations happen at trace start + k * interval; the counts come from whole
intervals, so "last 15 min" is exactly the three 5-minute buckets before it.
"""

from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np

from prewarm.sim.device import SimGPU
from prewarm.sim.policies.base import ABSENT, Policy
from prewarm.sim.trace import Trace


class TopNPolicy(Policy):
    name = "topn"

    def __init__(self, interval_s: float = 300.0, lookback_s: float = 900.0) -> None:
        if interval_s <= 0 or lookback_s < interval_s:
            raise ValueError("topn: interval must be > 0 and lookback >= interval")
        self.interval_s = interval_s
        self.n_buckets = max(1, round(lookback_s / interval_s))

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        super().bind(gpu, trace)
        n = trace.n_models
        self.order: OrderedDict[int, None] = OrderedDict()
        self.counts = [0] * n
        self.history: deque[np.ndarray] = deque(maxlen=self.n_buckets)
        self.target: set[int] = set()
        self.t0 = float(trace.ts[0])
        self.next_event = self.t0 + self.interval_s

    def touch(self, i: int, m: int, t: float, hit: bool) -> None:
        order = self.order
        order.pop(m, None)
        order[m] = None
        self.counts[m] += 1

    def on_load(self, m: int, start: float, ready: float, demand: bool) -> None:
        self.order.setdefault(m, None)

    def wanted(self, m: int, s: float) -> bool:
        return m in self.target

    def on_evict(self, m: int) -> None:
        del self.order[m]

    def victim(self, m: int, t: float) -> int | None:
        fallback = None
        is_resident = self.gpu.is_resident
        for v in self.order:
            if v == m or not is_resident(v, t):
                continue
            if v not in self.target:
                return v
            if fallback is None:
                fallback = v
        return fallback

    def advance(self, x: float) -> None:
        self.history.append(np.asarray(self.counts, dtype=np.int64))
        self.counts = [0] * len(self.counts)
        self._reevaluate(x)
        self.next_event = x + self.interval_s

    def _reevaluate(self, x: float) -> None:
        total = np.sum(self.history, axis=0)
        active = np.flatnonzero(total > 0)
        ranked = active[np.lexsort((active, -total[active]))].tolist()
        gpu = self.gpu
        chosen: list[int] = []
        used = 0
        for k in ranked:
            if used + gpu.sizes[k] > gpu.budget:
                break
            chosen.append(k)
            used += gpu.sizes[k]
        self.target = set(chosen)
        for k in [k for k in gpu.queue if k not in self.target]:
            gpu.cancel(k)  # its own prefetches that fell out of the top N (requested ones stay)
        for k in chosen:
            if gpu.status[k] == ABSENT:
                gpu.enqueue(k, x)
