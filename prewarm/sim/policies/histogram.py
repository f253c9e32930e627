"""The hybrid histogram policy of Shahrad et al., "Serverless in the Wild" (USENIX ATC 2020).

Per model, the idle times (IT: from the end of one request to the start of the
next) go into a histogram of 1-minute bins over a 4-hour range. After each
request the policy sets two windows:

* **pre-warm window**: how long after the request the model is unloaded before
  it is loaded again; the 5th percentile of the ITs (bin lower edge) minus a 10 %
  margin. Zero means "stay loaded".
* **keep-alive window**: how long the model then stays loaded; the 99th
  percentile of the ITs (bin upper edge) plus a 10 % margin, counted from the
  moment it is warm again (the pre-warm load, or the request's end).

When the histogram is not representative (fewer than ``min_samples`` in-range
ITs, or a coefficient of variation of the bin counts below 2: the ITs are spread
out) the policy falls back to a fixed keep-alive of the whole range (4 h) and no
pre-warm. When at least half the ITs fall outside the range, an ARIMA model of
the IT series predicts the next IT ``p``; pre-warm = 0.85 p, keep-alive = 0.3 p
(15 % margins either side of ``p``).

The constants (range, bin, CV 2, OOB 50 %, margins 10 % and 15 %) are the paper's,
as also used by the dslab and OpenDC reproductions. The paper leaves "too few
ITs" unquantified; ``min_samples`` = 10 is our reading. ARIMA is fitted on the
last ``arima_history`` ITs (statsmodels ARIMA(1,0,0) with a constant; fewer than 3
ITs: their mean) to bound its cost on long traces.

Adaptation: the paper's platform has no memory limit. Under a VRAM budget, when a
load (on demand or a pre-warm) does not fit when it starts, models whose
keep-alive ran out are unloaded first, then the least recently used, as in the
LRU policy. A pre-warm joins the GPU's load queue like any load; if it reaches
the loader after its keep-alive window has passed, it is dropped.
"""

from __future__ import annotations

import heapq
import math
import warnings
from typing import Any

import numpy as np

from prewarm.sim.device import SimGPU
from prewarm.sim.policies.base import ABSENT, INF, PRESENT, KeepAliveExpiry
from prewarm.sim.policies.lru import LRUPolicy
from prewarm.sim.trace import Trace

RANGE_S = 4 * 3600.0
BIN_S = 60.0
HEAD = 0.05
TAIL = 0.99
HIST_MARGIN = 0.10
CV_THRESHOLD = 2.0
OOB_THRESHOLD = 0.5
ARIMA_MARGIN = 0.15


def arima_next(its: list[float]) -> float:
    """One-step ARIMA forecast of the next idle time, never negative."""
    if len(its) < 3 or max(its) == min(its):
        return max(0.0, float(np.mean(its)))
    from statsmodels.tsa.arima.model import ARIMA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = ARIMA(np.asarray(its, dtype=float), order=(1, 0, 0), trend="c").fit()
            pred = float(fit.forecast(1)[0])
        except (ValueError, np.linalg.LinAlgError):
            pred = float(np.mean(its))
    if not math.isfinite(pred):
        pred = float(np.mean(its))
    return max(0.0, pred)


class IdleHistogram:
    """One model's IT histogram with its 5th/99th percentile bins kept up to date in O(1) amortised."""

    __slots__ = ("bins", "n", "oob", "sumsq", "h_idx", "h_pre", "t_idx", "t_pre", "raw")

    def __init__(self, n_bins: int) -> None:
        self.bins = [0] * n_bins
        self.n = 0
        self.oob = 0
        self.sumsq = 0
        self.h_idx = 0
        self.h_pre = 0
        self.t_idx = 0
        self.t_pre = 0
        self.raw: list[float] = []

    @staticmethod
    def _seek(bins: list[int], idx: int, pre: int, target: float) -> tuple[int, int]:
        """Smallest index whose prefix sum reaches ``target`` (prefix sums only grow)."""
        while idx > 0 and pre - bins[idx] >= target:
            pre -= bins[idx]
            idx -= 1
        last = len(bins) - 1
        while pre < target and idx < last:
            idx += 1
            pre += bins[idx]
        return idx, pre

    def add(self, it: float, keep_raw: int) -> None:
        self.raw.append(it)
        if len(self.raw) > keep_raw:
            del self.raw[0]
        b = int(it // BIN_S)
        bins = self.bins
        if b >= len(bins):
            self.oob += 1
            return
        self.sumsq += 2 * bins[b] + 1
        bins[b] += 1
        self.n += 1
        if b <= self.h_idx:
            self.h_pre += 1
        if b <= self.t_idx:
            self.t_pre += 1
        self.h_idx, self.h_pre = self._seek(bins, self.h_idx, self.h_pre, HEAD * self.n)
        self.t_idx, self.t_pre = self._seek(bins, self.t_idx, self.t_pre, TAIL * self.n)

    def cv(self) -> float:
        nb = len(self.bins)
        if self.n == 0:
            return 0.0
        mean = self.n / nb
        var = max(0.0, (self.sumsq - nb * mean * mean) / (nb - 1))
        return math.sqrt(var) / mean

    def oob_rate(self) -> float:
        total = self.n + self.oob
        return self.oob / total if total else 0.0


class HistogramPolicy(KeepAliveExpiry, LRUPolicy):
    """Under a budget a load that does not fit unloads expired models, then evicts as LRU (inherited)."""

    name = "histogram"

    def __init__(self, min_samples: int = 10, arima_history: int = 100) -> None:
        self.min_samples = min_samples
        self.arima_history = arima_history
        self.n_bins = int(round(RANGE_S / BIN_S))

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        super().bind(gpu, trace)
        n = trace.n_models
        self.hist = [IdleHistogram(self.n_bins) for _ in range(n)]
        self.last_end = [-INF] * n
        self.expire = [INF] * n
        self.keep_until = [INF] * n
        self.token = [0] * n
        self.heap: list[tuple[float, int, int]] = []
        self.arima_fits = 0

    def windows(self, m: int) -> tuple[float, float]:
        """(pre-warm, keep-alive) in seconds for model ``m`` after its latest request."""
        h = self.hist[m]
        if h.oob_rate() >= OOB_THRESHOLD:
            self.arima_fits += 1
            p = arima_next(h.raw)
            return p * (1.0 - ARIMA_MARGIN), p * ARIMA_MARGIN * 2.0
        if h.n < self.min_samples or h.cv() < CV_THRESHOLD:
            return 0.0, RANGE_S
        pre = h.h_idx * BIN_S * (1.0 - HIST_MARGIN)
        keep = (h.t_idx + 1) * BIN_S * (1.0 + HIST_MARGIN)
        return pre, keep

    def is_live(self, m: int, t: float) -> bool:
        exp = self.expire[m]
        if exp <= t:
            self.evict(m, exp)
            return False
        return True

    def touch(self, i: int, m: int, t: float, hit: bool) -> None:
        super().touch(i, m, t, hit)
        last = self.last_end[m]
        if last > -INF:
            self.hist[m].add(max(0.0, t - last), self.arima_history)

    def served(self, m: int, end: float) -> None:
        self.last_end[m] = end
        pre, keep = self.windows(m)
        self.token[m] += 1
        if pre <= 0.0:
            self.expire[m] = end + keep
            return
        self.expire[m] = end  # unloaded as soon as it has served, loaded again at end + pre
        self.keep_until[m] = end + pre + keep
        heapq.heappush(self.heap, (end + pre, self.token[m], m))
        if self.heap[0][0] < self.next_event:
            self.next_event = self.heap[0][0]

    def on_load(self, m: int, start: float, ready: float, demand: bool) -> None:
        super().on_load(m, start, ready, demand)
        if demand:
            self.served(m, ready)
        else:
            self.expire[m] = self.keep_until[m]

    def wanted(self, m: int, s: float) -> bool:
        return self.keep_until[m] > s

    def on_evict(self, m: int) -> None:
        super().on_evict(m)
        self.expire[m] = INF

    def advance(self, x: float) -> None:
        heap, gpu = self.heap, self.gpu
        while heap and heap[0][0] <= x:
            w, tok, m = heapq.heappop(heap)
            if tok != self.token[m] or self.keep_until[m] <= w:
                continue
            st = gpu.status[m]
            if st == ABSENT or (st == PRESENT and not self.is_live(m, w)):
                gpu.enqueue(m, w)
        self.next_event = heap[0][0] if heap else INF

    def expirable(self) -> list[int]:
        return list(self.order)

    def report(self) -> dict[str, Any]:
        return {"arima_fits": self.arima_fits}
