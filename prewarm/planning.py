"""The planning state: each model's expected request rate, and the decisions that follow from it.

The objective (docs/replay.md, "The decision procedure"): over the horizon, under
the budget, with the one serial loader in view, minimise the expected client
waiting seconds plus ``vram_cost`` x GB-hours held. A model that is not resident
when it is asked for costs one load (its load seconds, for the request that finds
it absent and those that arrive while it loads); kept, it costs the VRAM it
holds. With ``rate`` its expected requests per second, the expected time to its
next request is about ``1 / rate``, so evicting it now costs ``load_s`` about
``1 / rate`` seconds from now and keeping it until then holds
``size x 1 / rate`` byte-seconds. Its *worth*, in seconds of waiting saved per
GB-hour held, is then::

    worth = rate x load_s x 3600 / (size_bytes / 1e9)

which is greedy-dual-size-frequency's ``frequency x cost / size`` with the
frequency read from the forecast rather than counted, and Belady's rule (evict
what is needed farthest ahead) when the rate is the inverse of the time to the
next request. Every decision ranks by it:

* to make room, the lowest worth goes first (then any eviction the others
  already make room for is put back);
* a prefetch is queued only while the loader would otherwise idle, for the
  absent model of highest worth, and only if the models it displaces are worth
  less in total (``rate x load_s`` summed, the waiting per second they save)
  than it brings;
* a resident model whose worth is below ``vram_cost`` is let go: at that price the
  memory is worth more than the waiting it saves. At ``vram_cost`` 0, the
  default, the budget is spent for the fewest cold starts.

The rate comes from the forecaster where it has an opinion about the model
(its expected requests over the forecast horizon, seasonal model, recency and
users combined), and otherwise from each model's own decayed request count
(half-life 6 h, the ``lfu`` baseline's); the decayed rate also breaks ties, so
among models the forecast expects nothing of, the most recently busy stay. Keys
are whatever the caller names models by (ids in the replay, names in serve).

Pure: no I/O, no clock of its own; the caller passes every time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

HALF_LIFE_S = 6 * 3600.0
_LN2 = math.log(2.0)


def needed(chosen: Sequence[T], size: Callable[[T], int], need: int) -> list[T]:
    """``chosen`` (in the order picked) less any the others already free ``need`` bytes without.

    Picking one at a time can overshoot (a small model picked before a big one
    that alone would do); an eviction that was not needed only adds a cold start,
    so those are put back, the last picked (the most worth keeping) first.
    """
    freed = sum(size(c) for c in chosen)
    back: set[int] = set()
    for k in range(len(chosen) - 1, -1, -1):
        if freed - size(chosen[k]) >= need:
            back.add(k)
            freed -= size(chosen[k])
    return [c for k, c in enumerate(chosen) if k not in back]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One model as a decision sees it: its key, bytes, load seconds, and whether it may be evicted now."""

    key: Any
    size_bytes: int
    load_seconds: float
    evictable: bool = True


def _size(c: Candidate) -> int:
    return c.size_bytes


class PlanningState:
    """Rates per model (forecast, else decayed count) and the worth-ranked decisions of the module docstring."""

    def __init__(self, vram_cost: float = 0.0, half_life_s: float = HALF_LIFE_S) -> None:
        if not (vram_cost >= 0 and math.isfinite(vram_cost)):
            raise ValueError(f"vram_cost must be finite and >= 0, got {vram_cost}")
        if not (half_life_s > 0 and math.isfinite(half_life_s)):
            raise ValueError(f"half_life_s must be finite and > 0, got {half_life_s}")
        self.vram_cost = float(vram_cost)
        self.half_life_s = float(half_life_s)
        self._score: dict[Any, float] = {}  # log2 of the decayed count, in units of 2^(t / half_life)
        self.forecast: dict[Any, float] = {}  # expected requests per second over the forecast horizon

    # -- inputs ---------------------------------------------------------------

    def observe(self, key: Any, t: float) -> None:
        """One request for ``key`` at ``t``."""
        x = t / self.half_life_s
        s = self._score.get(key)
        if s is None:
            self._score[key] = x
            return
        hi, lo = (s, x) if s >= x else (x, s)
        self._score[key] = hi + math.log2(1.0 + 2.0 ** (lo - hi))

    def set_forecast(self, rates: Mapping[Any, float]) -> None:
        """The forecaster's latest word: expected requests per second per model (models absent: no opinion)."""
        self.forecast = dict(rates)

    # -- rates and worth --------------------------------------------------------

    def recent_rate(self, key: Any, t: float) -> float:
        """Requests per second from the decayed count: count x ln 2 / half-life."""
        s = self._score.get(key)
        if s is None:
            return 0.0
        return float(2.0 ** (s - t / self.half_life_s) * _LN2 / self.half_life_s)

    def rate(self, key: Any, t: float) -> float:
        f = self.forecast.get(key)
        return f if f is not None else self.recent_rate(key, t)

    def worth(self, c: Candidate, t: float) -> float:
        """Seconds of waiting saved per GB-hour held (a zero-size model counts as one byte)."""
        return self.rate(c.key, t) * c.load_seconds * 3600.0 / (max(c.size_bytes, 1) / 1e9)

    def _order(self, c: Candidate, t: float) -> tuple[float, float]:
        return (self.worth(c, t), self.recent_rate(c.key, t) * c.load_seconds / max(c.size_bytes, 1))

    # -- decisions --------------------------------------------------------------

    def victims(self, resident: Sequence[Candidate], need_bytes: int, t: float) -> list[Any] | None:
        """The evictions that free ``need_bytes``: lowest worth first, then those the others already make room
        for put back (most worth first). None when the evictable models cannot free enough."""
        if need_bytes <= 0:
            return []
        pool = sorted((c for c in resident if c.evictable), key=lambda c: self._order(c, t))
        chosen: list[Candidate] = []
        freed = 0
        for c in pool:
            if freed >= need_bytes:
                break
            chosen.append(c)
            freed += c.size_bytes
        if freed < need_bytes:
            return None
        return [c.key for c in needed(chosen, _size, need_bytes)]

    def expendable(self, resident: Sequence[Candidate], t: float) -> list[Any]:
        """Evictable resident models worth less than ``vram_cost`` (none at 0)."""
        if self.vram_cost <= 0:
            return []
        return [c.key for c in resident if c.evictable and self.worth(c, t) < self.vram_cost]

    def prefetch(self, absent: Sequence[Candidate], resident: Sequence[Candidate], free_bytes: int,
                 t: float) -> tuple[Any, list[Any]] | None:
        """The absent model to load now (the loader is idle) and the evictions it needs, or None.

        The highest-worth absent model with a positive rate, worth at least
        ``vram_cost``, whose displaced models' ``rate x load_s`` sums to less than
        its own: it is expected to save more waiting per second than they do.
        Only the best candidate is considered; if it does not pay, neither would
        a worse one displacing the same models.
        """
        best: Candidate | None = None
        best_order = (0.0, 0.0)
        for c in absent:
            if self.rate(c.key, t) <= 0:
                continue
            o = self._order(c, t)
            if best is None or o > best_order:
                best, best_order = c, o
        if best is None or self.worth(best, t) < self.vram_cost:
            return None
        need = best.size_bytes - free_bytes
        gone = self.victims(resident, need, t)
        if gone is None:
            return None
        by_key = {c.key: c for c in resident}
        lost = sum(self.rate(k, t) * by_key[k].load_seconds for k in gone)
        if lost >= self.rate(best.key, t) * best.load_seconds:
            return None
        return best.key, gone
