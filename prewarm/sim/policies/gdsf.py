"""Greedy-dual keep-alive (FaaSCache, Fuerst & Sharma, ASPLOS'21), the strongest published reactive policy here.

Each resident model has a priority ``clock + frequency x cost / size``; to make
room the lowest goes first, and the clock becomes the priority of the last model
evicted, so models not used since are overtaken by whatever is used now (aging
without a timer). Faithful to the paper and its simulator (aFuerst/faascache-sim,
``LambdaScheduler.calc_priority`` and ``Eviction``):

* cost = the model's load seconds (the paper's cold-start cost, run time minus
  warm time), size = its bytes;
* frequency counts the requests a model served while resident (a model that
  comes back starts again from the request that brought it), and the priority is
  recomputed with the current clock on every request;
* clock = the priority of the last victim of an eviction round (victims go in
  increasing priority, so it is their largest);
* no timer, no prefetch: a model stays until room is needed.

Differences forced by the simulated GPU, not choices: requests that wait for a
queued or loading model count towards its frequency when its load starts (the
paper's simulator has no queue; each of them would have started a container of
its own), and ties in priority go least recently used first.

``gdsf-lifetime`` counts each model's requests over its whole history instead,
never reset by an eviction, as LFU-DA (Arlitt et al., 2000) does for web caches.
"""

from __future__ import annotations

from prewarm.sim.device import SimGPU
from prewarm.sim.policies.base import LowestFirst
from prewarm.sim.trace import Trace


class GDSFPolicy(LowestFirst):
    name = "gdsf"
    lifetime = False

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        super().bind(gpu, trace)
        n = trace.n_models
        self.clock = 0.0
        self.freq = [0] * n  # requests counted towards the priority (while resident, or over the history)
        self.pending = [0] * n  # requests that arrived while the model was not ready (counted when it loads)
        self.rank = [0.0] * n  # the priority: clock + freq x cost / size
        self.weight = [gpu.load_seconds[m] / max(gpu.sizes[m], 1) for m in range(n)]  # cost / size

    def _rank(self, m: int) -> None:
        self.rank[m] = self.clock + self.freq[m] * self.weight[m]

    def touch(self, i: int, m: int, t: float, hit: bool) -> None:
        super().touch(i, m, t, hit)
        if m in self.resident:
            self.freq[m] += 1
            self._rank(m)
        else:
            self.pending[m] += 1

    def on_load(self, m: int, start: float, ready: float, demand: bool) -> None:
        self.freq[m] = self.pending[m] + (self.freq[m] if self.lifetime else 0)
        self.pending[m] = 0
        super().on_load(m, start, ready, demand)
        self._rank(m)

    def on_evict(self, m: int) -> None:
        super().on_evict(m)
        if self.rank[m] > self.clock:
            self.clock = self.rank[m]


class GDSFLifetimePolicy(GDSFPolicy):
    name = "gdsf-lifetime"
    lifetime = True
