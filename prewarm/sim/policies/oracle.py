"""The oracle: perfect knowledge of future requests, the reference no online policy should beat.

No single clairvoyant rule is best everywhere (a rule that ignores size loses to
an online policy that weighs it once the loader saturates), so the ``oracle`` of
the tables is the best, per cell, of several clairvoyant strategies, each a
``rule`` of this class and none reusing an online policy's decisions:

* ``cost``: evict the resident model whose eviction costs the fewest cold
  requests (see ``victim``); Belady's rule among equals.
* ``belady``: evict the model needed farthest in the future (Belady's MIN; a
  model never asked for again first).
  ``belady-size``: the largest seconds to the next request x bytes / load
  seconds (Belady for objects of different sizes and costs: the eviction that
  frees the most byte-seconds per second of reloading).
* ``gd``: greedy-dual with the true future frequencies: evict the lowest
  ``future requests x load seconds / bytes`` (the requests ``cost`` counts, per
  byte the eviction frees, each weighted by what reloading it costs); Belady
  among equals. ``gd-10m``, ``gd-1h`` and ``gd-6h`` count the true requests of
  the next 10 minutes, hour and six hours instead (the plan's two windows, the
  forecast horizon, the decayed count's half-life: the scales the online
  planner reads demand at, so a rule of each is there to hold it to).
  ``gd-keep`` counts them over the cache's own characteristic time (the mean
  idle age of the models it evicted, ``prewarm.planner.KeepTime``), the scale
  the planner reads its outlook at; before any eviction Belady alone.
* ``frequency``: evict the model with the fewest requests left in the trace
  (LFU with the future's counts); Belady among equals. ``popularity``: the
  fewest requests over the whole trace, past and future (a static ranking). When the loader is
  saturated every load delays everyone queued behind it, and keeping the models
  that will be asked for most saves the most loads.

Each rule runs with and without prefetching: a prefetch holds the one loader,
and when it saturates a demand load arriving just after waits for it.

It is not a proof: it is a reference that must not be beaten, and a test holds
every policy to it on random traces. Shared by every rule:

* Eviction: by the rule above.
* Prefetch: whenever the loader is idle, the non-resident model needed soonest is
  loaded, if it fits, or if Belady allows making room for it (evicting only
  models needed later than it: the farthest-needed first, or for ``gd-keep`` in
  its own eviction order, as the planner makes room for a prefetch by its).
  The loader is then busy for that load; the next prefetch is considered when
  it is idle again.

Knowing the future is all it has over the others: it runs on the same simulated
GPU, with the same single loader and the same budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prewarm.planner import KeepTime, needed
from prewarm.sim.device import SimGPU
from prewarm.sim.policies.base import INF, Policy
from prewarm.sim.trace import Trace

# Windows over which a victim's future requests are counted (see OraclePolicy.victim): the first ends when
# it could be back, each next one is twice as long and its requests weigh half.
COST_DOUBLINGS = 5


def next_request_times(ts: np.ndarray, mid: np.ndarray) -> np.ndarray:
    """For each request, the time of the next request for the same model (inf if none)."""
    order = np.lexsort((np.arange(len(ts)), mid))
    nxt = np.full(len(ts), np.inf)
    same = mid[order][1:] == mid[order][:-1]
    nxt[order[:-1][same]] = ts[order[1:][same]]
    return nxt


GD_WINDOWS_S = {"gd-10m": 600.0, "gd-1h": 3600.0, "gd-6h": 21600.0}
ORACLE_RULES = ("cost", "belady", "belady-size", "gd", "frequency", "popularity", *GD_WINDOWS_S, "gd-keep")


class OraclePolicy(Policy):
    name = "oracle"

    def __init__(self, rule: str = "cost", prefetch: bool = True) -> None:
        if rule not in ORACLE_RULES:
            raise ValueError(f"oracle rule must be one of {', '.join(ORACLE_RULES)}, got {rule!r}")
        self.rule = rule
        self.prefetch = prefetch

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
        # every request as one sorted key (model id * key_range + time), to count a model's requests in a span
        self.t0 = float(trace.ts[0])
        # wide enough for the longest cost window (victim): a load start up to n loads after the last request,
        # then 2^(COST_DOUBLINGS - 1) x a backlog of up to n + 1 loads, then the victim's own load
        reach = (n + (2 ** (COST_DOUBLINGS - 1) + 1) * (n + 1)) * max(gpu.load_seconds, default=0.0)
        self.key_range = float(trace.ts[-1]) - self.t0 + reach + 1.0
        order = np.lexsort((trace.ts, trace.mid))
        self.keys = trace.mid[order] * self.key_range + (trace.ts[order] - self.t0)
        self.load_np = np.asarray(gpu.load_seconds, dtype=np.float64)
        self.last = [float("-inf")] * n  # each model's latest request, for its idle age when evicted
        self.keep = KeepTime()

    def on_load(self, m: int, start: float, ready: float, demand: bool) -> None:
        self.resident[m] = True
        if ready < self.next_event:
            self.next_event = ready  # the loader is free again then: time to consider a prefetch

    def on_evict(self, m: int) -> None:
        self.resident[m] = False

    def touch(self, i: int, m: int, t: float, hit: bool) -> None:
        self.last[m] = t
        nu = self.nxt[i]
        self.next_use[m] = nu
        if not hit or nu > self.blocked_at:
            self.blocked_at = INF
            gpu = self.gpu
            wake = gpu.loader_free if gpu.loader_free > t else t
            if wake < self.next_event:
                self.next_event = wake

    def victim(self, m: int, t: float) -> int | None:
        """The resident model whose eviction costs the fewest cold requests; ties: Belady (needed farthest).

        Evicted at ``t``, model ``v`` cannot be back before the loads queued now
        (``m``'s and those behind it) and its own load are done, so every request for
        it until then is cold. Under a busy loader that is not the whole cost: a
        model that is evicted, reloaded and squeezed again pays for its later
        requests too, the more surely the sooner they come. So the backlog part of
        the window is doubled ``COST_DOUBLINGS - 1`` times and the requests each
        doubling adds count half as much as those before.
        """
        cand = self.resident.copy()
        cand[m] = False
        idx = np.flatnonzero(cand)
        if idx.size == 0:
            return None
        if self.rule == "belady":
            return int(idx[np.argmax(self.next_use[idx])])
        if self.rule == "belady-size":
            span = (self.next_use[idx] - t) * self.sizes_np[idx] / np.maximum(self.load_np[idx], 1e-9)
            return int(idx[np.argmax(span)])
        gpu = self.gpu
        ls = self.load_np
        base = idx * self.key_range - self.t0
        if self.rule == "gd-keep":  # the keep time, then doublings of it at half the weight, as ``cost`` does
            window = self.keep.value()
            before = np.searchsorted(self.keys, base + t, side="left")
            left = np.zeros(idx.size)
            for j in range(COST_DOUBLINGS):
                upto = np.searchsorted(self.keys, np.minimum(base + t + 2**j * window, base + self.key_range),
                                       side="left")
                left += (upto - before) * 0.5**j
                before = upto
            return self._fewest(idx, left * ls[idx] / np.maximum(self.sizes_np[idx], 1))
        if self.rule in ("frequency", "popularity") or self.rule in GD_WINDOWS_S:
            reach = np.minimum(base + t + GD_WINDOWS_S.get(self.rule, INF), base + self.key_range)
            since = base + (self.t0 if self.rule == "popularity" else t)
            left = (np.searchsorted(self.keys, reach, side="left")
                    - np.searchsorted(self.keys, since, side="left")).astype(np.float64)
            if self.rule != "frequency":
                left *= ls[idx] / np.maximum(self.sizes_np[idx], 1)
            return self._fewest(idx, left)
        backlog = ls[m] + (float(ls[list(gpu.queue)].sum()) if gpu.queue else 0.0)
        before = np.searchsorted(self.keys, base + t, side="left")
        cost = np.zeros(idx.size)
        for j in range(COST_DOUBLINGS):
            upto = np.searchsorted(self.keys, base + (t + 2**j * backlog) + ls[idx], side="right")
            cost += (upto - before) * 0.5**j
            before = upto
        if self.rule == "gd":
            cost = cost * ls[idx] / np.maximum(self.sizes_np[idx], 1)
        return self._fewest(idx, cost)

    def _fewest(self, idx: np.ndarray, score: np.ndarray) -> int:
        """The model of ``idx`` with the lowest ``score``; among equals Belady's (needed farthest)."""
        low = idx[score == score.min()]
        return int(low[np.argmax(self.next_use[low])])

    def make_room(self, m: int, t: float) -> bool:
        """Choose victims in ``victim`` order until ``m`` fits, then keep any the others already make room for.

        Picking one victim at a time can overshoot (a small model picked before a
        big one that alone would have done); evicting a model that did not need to
        go only adds cold starts, so those stay, the last picked (most costly) first.
        """
        gpu = self.gpu
        need = gpu.used + gpu.sizes[m] - gpu.budget
        if need <= 0:
            return True
        chosen = self._pick(m, t, need)
        if chosen is None:
            return False
        self._evict_needed(chosen, need, t)
        return True

    def _pick(self, m: int, t: float, need: int) -> list[int] | None:
        """Victims among the resident mask, one at a time in ``victim`` order, until they free ``need`` bytes
        (None if they cannot); the mask is left as it was."""
        chosen: list[int] = []
        freed = 0
        while freed < need:
            v = self.victim(m, t)
            if v is None:
                self.resident[chosen] = True
                return None
            chosen.append(v)
            self.resident[v] = False  # hidden from victim() while choosing
            freed += self.gpu.sizes[v]
        self.resident[chosen] = True
        return chosen

    def _evict_needed(self, chosen: list[int], need: int, t: float) -> None:
        """Evict ``chosen`` (in the order they were picked) but for those the others already free ``need`` without."""
        for v in needed(chosen, self.gpu.sizes.__getitem__, need):
            if self.last[v] > float("-inf"):
                self.keep.add(t - self.last[v], t)
            self.evict(v, t)

    def advance(self, x: float) -> None:
        self.next_event = INF
        if self.prefetch and self.gpu.loader_idle(x):
            self._prefetch(x)

    def _prefetch(self, x: float) -> None:
        """Queue one prefetch at ``x`` (the loader is idle, so it starts now) if Belady allows."""
        gpu = self.gpu
        # the loader is idle, so nothing is queued or loading: the models not absent are exactly the resident ones
        waiting = np.where(self.resident | self.never, np.inf, self.next_use)
        c = int(np.argmin(waiting))
        need_at = waiting[c]
        if not np.isfinite(need_at):
            self.blocked_at = INF
            return
        short = gpu.used + gpu.sizes[c] - gpu.budget
        if short > 0:
            later = np.flatnonzero(self.resident & (self.next_use > need_at))
            if later.size == 0 or self.sizes_np[later].sum() < short:
                self.blocked_at = need_at
                return
            chosen: list[int] = []
            if self.rule == "gd-keep":  # among those, its own eviction order, as the planner makes room
                held = self.resident.copy()
                self.resident[:] = False
                self.resident[later] = True
                chosen = self._pick(c, x, short) or []  # later's bytes cover short: never None
                self.resident[:] = held
            else:
                freed = 0
                for v in later[np.argsort(-self.next_use[later], kind="stable")].tolist():
                    if freed >= short:
                        break
                    chosen.append(v)
                    freed += gpu.sizes[v]
            self._evict_needed(chosen, short, x)
        self.prefetches += 1
        gpu.enqueue(c, x)

    def report(self) -> dict[str, Any]:
        return {"prefetches": self.prefetches, "oracle_rule": self.rule + ("" if self.prefetch else ", no prefetch")}
