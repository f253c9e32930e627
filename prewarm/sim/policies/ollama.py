"""Ollama's own scheduler (server/sched.go), as far as residency goes.

* ``keep_alive`` (default 5 min) runs from the end of a model's last request; when
  it runs out the model is unloaded.
* When a load does not fit, Ollama's ``findRunnerToUnload`` sorts the loaded
  runners by ``sessionDuration`` (the keep_alive) and then by model path, and
  unloads the first *idle* one (refCount 0), repeating until the new model fits;
  only if none is idle does it pick the first and wait for it. With one keep_alive
  for every model that order is the model blob's path, ``sha256-<digest>``: a fixed
  order that has nothing to do with recency. We reproduce it with a fixed rank per
  model from the SHA-256 of its name. Room is made when a load starts, when the
  only model that could be busy (the previous load) has finished.
* One load at a time (the scheduler's pending queue), as on the simulated GPU.

``OLLAMA_MAX_LOADED_MODELS`` (default 3 per GPU) is not modelled: the replay asks
what a VRAM budget buys, so the budget is the only limit, for every policy.
"""

from __future__ import annotations

import hashlib

from prewarm.sim.device import SimGPU
from prewarm.sim.policies.base import INF, KeepAliveExpiry
from prewarm.sim.trace import Trace

DEFAULT_KEEP_ALIVE_S = 300.0


def blob_rank(names: list[str]) -> list[int]:
    """A fixed pseudo-random order of models, standing in for Ollama's sort by blob digest."""
    digests = sorted(range(len(names)), key=lambda k: hashlib.sha256(names[k].encode()).hexdigest())
    rank = [0] * len(names)
    for r, k in enumerate(digests):
        rank[k] = r
    return rank


class OllamaPolicy(KeepAliveExpiry):
    name = "ollama"

    def __init__(self, keep_alive_s: float = DEFAULT_KEEP_ALIVE_S) -> None:
        self.keep_alive_s = keep_alive_s

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        super().bind(gpu, trace)
        self.expire = [INF] * trace.n_models
        self.rank = blob_rank(trace.names)
        self.loaded: set[int] = set()

    def is_live(self, m: int, t: float) -> bool:
        exp = self.expire[m]
        if exp <= t:
            self.evict(m, exp)
            return False
        return True

    def served(self, m: int, end: float) -> None:
        self.expire[m] = end + self.keep_alive_s

    def on_load(self, m: int, start: float, ready: float, demand: bool) -> None:
        self.loaded.add(m)
        super().on_load(m, start, ready, demand)

    def on_evict(self, m: int) -> None:
        self.loaded.discard(m)
        self.expire[m] = INF

    def report(self) -> dict[str, float]:
        return {"keep_alive_s": self.keep_alive_s}

    def expirable(self) -> list[int]:
        return list(self.loaded)

    def victim(self, m: int, t: float) -> int | None:
        # every loaded runner is idle when a load starts (one load at a time, no service time): blob order
        rank = self.rank
        best, best_rank = None, len(rank)
        for v in self.loaded:
            if v != m and rank[v] < best_rank:
                best, best_rank = v, rank[v]
        return best
