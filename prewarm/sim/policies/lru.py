"""LRU: keep every model until room is needed, then evict the least recently used (ModelMesh's behaviour).

No timer: a model stays resident however long it is idle. "Used" means a request
asked for it; a model enters the order when its load starts (the most recent then).
Only resident models are in the order, so the victim is always an idle resident one.
"""

from __future__ import annotations

from collections import OrderedDict

from prewarm.sim.device import ABSENT, SimGPU
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


class RouterLRUPolicy(LRUPolicy):
    """llama.cpp's router with ``--models-max K``: past K models running it unloads the least recently used,
    counting models, not bytes (tools/server/server-models.cpp, unload_lru). The byte budget still binds, as the
    GPU's memory would; a model queued or loading counts as running, as a child that is starting does."""

    name = "router"

    def __init__(self, models_max: int) -> None:
        if models_max < 1:
            raise ValueError("--models-max must be at least 1 for the router policy (0 is no limit: use lru)")
        self.models_max = models_max

    def report(self) -> dict[str, float]:
        return {"models_max": self.models_max}

    def make_room(self, m: int, t: float) -> bool:
        gpu = self.gpu
        while sum(1 for v, st in enumerate(gpu.status) if st != ABSENT and v != m) >= self.models_max:
            v = self.victim(m, t)
            if v is None:
                return False
            self.evict(v, t)
        return super().make_room(m, t)
