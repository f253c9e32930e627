"""LRU: keep every model until room is needed, then evict the least recently used (ModelMesh's behaviour).

No timer: a model stays resident however long it is idle. "Used" means a request
asked for it; a model enters the order when its load starts (the most recent then).
Only resident models are in the order, so the victim is always an idle resident one.
"""

from __future__ import annotations

from collections import OrderedDict

from prewarm.sim.device import SimGPU
from prewarm.sim.policies.base import Policy
from prewarm.sim.trace import Trace


class LRUPolicy(Policy):
    name = "lru"

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        super().bind(gpu, trace)
        self.order: OrderedDict[int, None] = OrderedDict()

    def touch(self, i: int, m: int, t: float, hit: bool) -> None:
        order = self.order
        order.pop(m, None)
        order[m] = None

    def on_load(self, m: int, start: float, ready: float, demand: bool) -> None:
        self.order.setdefault(m, None)

    def on_evict(self, m: int) -> None:
        del self.order[m]

    def victim(self, m: int, t: float) -> int | None:
        is_resident = self.gpu.is_resident
        for v in self.order:
            if v != m and is_resident(v, t):
                return v
        return None
