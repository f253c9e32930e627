"""The oracle: perfect knowledge of future requests, the limit no online policy should beat.

* Eviction is Belady's: the resident model whose next request is farthest away
  goes first (a model never asked for again goes before any other).
* Prefetch: whenever the loader is idle, the non-resident model needed soonest is
  loaded, if it fits, or if Belady allows making room for it (evicting only
  models needed later than it). The loader is then busy for that load; the next
  prefetch is considered when it is idle again.

Knowing the future is all it has over the others: it runs on the same simulated
GPU, with the same single loader and the same budget.
"""

from __future__ import annotations

import numpy as np

from prewarm.sim.gpu import SimGPU
from prewarm.sim.policies.base import INF, Policy
from prewarm.sim.trace import Trace


def next_request_times(ts: np.ndarray, mid: np.ndarray) -> np.ndarray:
    """For each request, the time of the next request for the same model (inf if none)."""
    order = np.lexsort((np.arange(len(ts)), mid))
    nxt = np.full(len(ts), np.inf)
    same = mid[order][1:] == mid[order][:-1]
    nxt[order[:-1][same]] = ts[order[1:][same]]
    return nxt


class OraclePolicy(Policy):
    name = "oracle"

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        super().bind(gpu, trace)
        n = trace.n_models
        self.nxt = next_request_times(trace.ts, trace.mid).tolist()
        first = np.full(n, np.inf)
        np.minimum.at(first, trace.mid, trace.ts)
        self.next_use = first
        self.resident = np.zeros(n, dtype=np.bool_)
        self.sizes_np = np.asarray(gpu.sizes, dtype=np.int64)
        self.never = self.sizes_np > gpu.budget  # the replay skips their requests: never a prefetch candidate
        self.prefetches = 0
        self.next_event = float(trace.ts[0])
        self.blocked_at = INF  # next_use of the last refused prefetch candidate

    def on_load(self, m: int) -> None:
        self.resident[m] = True

    def on_evict(self, m: int) -> None:
        self.resident[m] = False

    def touch(self, i: int, m: int, t: float, end: float, hit: bool) -> None:
        nu = self.nxt[i]
        self.next_use[m] = nu
        gpu = self.gpu
        if not hit or nu > self.blocked_at:
            self.blocked_at = INF
            wake = gpu.loader_free if gpu.loader_free > t else t
            if wake < self.next_event:
                self.next_event = wake

    def victim(self, m: int, t: float) -> int | None:
        cand = self.resident.copy()
        cand[m] = False
        if not cand.any():
            return None
        ready = np.asarray(self.gpu.ready_at)
        idle = cand & (ready <= t)
        pool = idle if idle.any() else cand
        score = np.where(pool, self.next_use, -1.0)
        return int(np.argmax(score))

    def advance(self, t: float) -> None:
        gpu = self.gpu
        x = self.next_event
        self.next_event = INF
        while x <= t:
            if gpu.loader_free > x:
                x = gpu.loader_free
                continue
            if not self._prefetch(x):
                return
            x = gpu.loader_free
        self.next_event = x

    def _prefetch(self, x: float) -> bool:
        """Start one prefetch at ``x`` if Belady allows; False when nothing is worth loading now."""
        gpu = self.gpu
        waiting = np.where(self.resident | self.never, np.inf, self.next_use)
        c = int(np.argmin(waiting))
        need_at = waiting[c]
        if not np.isfinite(need_at):
            self.blocked_at = INF
            return False
        short = gpu.used + gpu.sizes[c] - gpu.budget
        if short > 0:
            later = np.flatnonzero(self.resident & (self.next_use > need_at))
            if later.size == 0 or self.sizes_np[later].sum() < short:
                self.blocked_at = need_at
                return False
            later = later[np.argsort(-self.next_use[later], kind="stable")]
            for v in later.tolist():
                if gpu.used + gpu.sizes[c] <= gpu.budget:
                    break
                self.evict(v, x)
        self.load(c, x)
        self.prefetches += 1
        return True

    def report(self) -> dict:
        return {"prefetches": self.prefetches}
