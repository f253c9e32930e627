"""LRU: keep every model until room is needed, then evict the least recently used (ModelMesh's behaviour).

No timer: a model stays resident however long it is idle. "Used" means a request
was served by it (or, for a model still loading, asked for it).
"""

from __future__ import annotations

from collections import OrderedDict

from prewarm.sim.gpu import SimGPU
from prewarm.sim.policies.base import Policy
from prewarm.sim.trace import Trace


class LRUPolicy(Policy):
    name = "lru"

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        super().bind(gpu, trace)
        self.order: OrderedDict[int, None] = OrderedDict()

    def touch(self, i: int, m: int, t: float, end: float, hit: bool) -> None:
        self.order.move_to_end(m)

    def on_load(self, m: int) -> None:
        self.order[m] = None

    def on_evict(self, m: int) -> None:
        del self.order[m]

    def victim(self, m: int, t: float) -> int | None:
        for v in self.order:
            if v != m:
                return v
        return None
