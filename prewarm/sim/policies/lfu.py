"""Decayed LFU: evict the model with the fewest recent requests, each request's weight halving every 6 hours.

The classic frequency baseline with aging (no timer, no prefetch, size and load
time ignored). Six hours is the issue's value, chosen before any run: a quarter
of a day, so a model used all morning still outranks one asked for once at noon,
and yesterday's demand has faded to an eighth by the next working day. A
request's weight is ``2^(t / half_life)``, kept as its base-2 logarithm so
comparisons never overflow: the order of two sums decays alike, so no rescaling
is needed. Ties go least recently used first.
"""

from __future__ import annotations

import math

from prewarm.sim.device import SimGPU
from prewarm.sim.policies.base import LowestFirst
from prewarm.sim.trace import Trace

HALF_LIFE_S = 6 * 3600.0


def log2_add(a: float, b: float) -> float:
    """log2(2^a + 2^b) without overflow."""
    if a == -math.inf:
        return b
    hi, lo = (a, b) if a >= b else (b, a)
    return hi + math.log2(1.0 + 2.0 ** (lo - hi))


class LFUPolicy(LowestFirst):
    name = "lfu"

    def __init__(self, half_life_s: float = HALF_LIFE_S) -> None:
        if not half_life_s > 0:
            raise ValueError(f"lfu: half-life must be > 0, got {half_life_s}")
        self.half_life_s = half_life_s

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        super().bind(gpu, trace)
        self.rank = [-math.inf] * trace.n_models  # log2 of the decayed count, in units of 2^(t / half_life)

    def touch(self, i: int, m: int, t: float, hit: bool) -> None:
        super().touch(i, m, t, hit)
        self.rank[m] = log2_add(self.rank[m], t / self.half_life_s)
