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
  absent model of highest worth, only if each model it displaces is worth less
  than it (else it would be the next to go: eviction and prefetch rank by the
  one score) and only if together they save less waiting per second
  (``rate x load_s`` summed) and are expected to see fewer requests per second
  (``rate`` summed: the cold starts they would cost) than it brings;
* a resident model whose worth is below ``vram_cost`` is let go: at that price the
  memory is worth more than the waiting it saves. At ``vram_cost`` 0, the
  default, the budget is spent for the fewest cold starts.

The rate comes from the forecaster where it has an opinion about the model
(its ``Outlook``: expected requests per second window by window ahead, seasonal
model, recency and users combined), and otherwise from each model's own decayed
request count (half-life 6 h, the ``lfu`` baseline's); the decayed rate also
breaks ties, so among models the forecast expects nothing of, the most recently
busy stay.

A model is worth the requests it is expected to serve warm before it would be
pushed out, and a model kept sits unused for as long as the cache lets idle
models sit: its characteristic time ``T`` (Che's approximation for an LRU-like
cache), measured here as the mean idle age of the models evicted to make room
over the last half-life (callers report them with ``evicted``). So the rate is
taken over the next ``T`` seconds: the outlook's expected requests where it
covers them, the decayed rate for the part past its end, over ``T``. On a small
GPU (``T`` of minutes) that is the forecast's next window or two, not its hour's
average (a model forecast busy in forty minutes is not worth keeping through
forty quiet ones); on a big one (``T`` of hours) mostly the model's own history,
which is all anyone knows past the horizon. Before any eviction (no ``T`` yet)
it is the outlook's rate at the instant. Keys are whatever the caller names
models by (ids in the replay, names in serve).

``step`` is the one decision the live prewarmer and the replay both make each
time the loader would idle: let go of what does not earn its memory, else load a
pinned model that is absent, else the prefetch that pays; ``plan`` carries steps
out on paper (``prewarm plan``).

Pure: no I/O, no clock of its own; the caller passes every time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

HALF_LIFE_S = 6 * 3600.0
_LN2 = math.log(2.0)
_INSTANT = 1e-3  # a characteristic time shorter than this (s) is read as the rate at the instant itself


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
    """One model as a decision sees it: its key, bytes, load seconds, whether it may be evicted now (resident) and
    whether the user pinned it (absent: it is loaded whatever its worth)."""

    key: Any
    size_bytes: int
    load_seconds: float
    evictable: bool = True
    pinned: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """One decision: the models to unload, then the one to load (None: only unloads), and why."""

    unload: list[Any]
    load: Any | None
    why: str


@dataclass(frozen=True, slots=True)
class PlanAction:
    """One action of a plan as it is shown and logged (prewarm_actions, /prewarm/status, ``prewarm plan``)."""

    model: str
    action: str  # "load" | "unload" | "keep"
    reason: str
    resident_bytes_after: int


@dataclass(frozen=True)
class Outlook:
    """The forecaster's word as the planner reads it: per model, expected requests per second in each interval
    between ``edges`` (absolute seconds, increasing; the first may be -inf and the last inf, "this rate
    from then on"). A model without a row has no forecast (its decayed count speaks for it); outside the
    edges nobody has a forecast.

    The shape over time matters: a model is worth what it is expected to be asked for while the cache would
    keep it, and that span (the characteristic time) is minutes on a small GPU and hours on a big one."""

    edges: np.ndarray  # shape (k + 1,)
    keys: tuple[Any, ...]
    density: np.ndarray  # shape (len(keys), k): requests per second

    def __post_init__(self) -> None:
        k = len(self.edges) - 1
        if k < 1 or self.density.shape != (len(self.keys), k) or np.any(np.diff(self.edges) <= 0):
            raise ValueError(f"an outlook needs increasing edges and {len(self.keys)} x {max(k, 0)} densities")

    @classmethod
    def flat(cls, rates: Mapping[Any, float], at: float = -math.inf, horizon_s: float = math.inf) -> Outlook:
        """``rates`` held from ``at`` for ``horizon_s`` (by default: always, taken at their word)."""
        end = math.inf if horizon_s == math.inf else at + horizon_s
        if not end > at:
            raise ValueError(f"a flat outlook needs a horizon from a finite start, got at={at} horizon={horizon_s}")
        keys = tuple(rates)
        density = np.fromiter((float(rates[k]) for k in keys), dtype=float, count=len(keys)).reshape(-1, 1)
        return cls(np.array([at, end], dtype=float), keys, density)

    def mean_rates(self) -> dict[Any, float]:
        """Per model, expected requests per second over the finite part of the outlook (what a person is shown)."""
        widths = np.diff(self.edges)
        finite = np.isfinite(widths)
        if not finite.any():
            return {k: float(d) for k, d in zip(self.keys, self.density[:, 0], strict=True)}
        rates = self.density[:, finite] @ widths[finite] / widths[finite].sum()
        return {k: float(r) for k, r in zip(self.keys, rates, strict=True)}


class KeepTime:
    """A cache's characteristic time: the mean idle age of the models it evicted to make room, each weighing half
    per ``half_life_s`` of age (Che's approximation: an entry stays about that long after its last use)."""

    def __init__(self, half_life_s: float = HALF_LIFE_S) -> None:
        self.half_life_s = half_life_s
        self._sum = 0.0  # decayed sums, weight 2^((t - _ref) / half_life)
        self._n = 0.0
        self._ref: float | None = None

    def add(self, idle_s: float, t: float) -> None:
        """A model idle for ``idle_s`` was evicted at ``t``."""
        x = t / self.half_life_s
        if self._ref is None or x - self._ref > 60.0:  # rebase before the weights overflow
            scale = 0.0 if self._ref is None else 2.0 ** (self._ref - x)
            self._sum *= scale
            self._n *= scale
            self._ref = x
        w = 2.0 ** (x - self._ref)
        self._sum += max(0.0, idle_s) * w
        self._n += w

    def value(self) -> float:
        return self._sum / self._n if self._n > 0 else 0.0


def _idle_capped(rate: float, last: float, t: float) -> float:
    """``rate``, at most 1 / the idle age since ``last`` (PlanningState.recent_rate says why)."""
    return rate if t <= last else min(rate, 1.0 / (t - last))


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
        self.forecast: dict[Any, float] = {}  # expected requests per second over the forecast's span (shown)
        self._outlook: Outlook | None = None
        self._row: dict[Any, int] = {}  # key -> row of the outlook's densities
        self._last: dict[Any, float] = {}  # each key's latest request
        self._keep = KeepTime(half_life_s)

    # -- inputs ---------------------------------------------------------------

    def observe(self, key: Any, t: float) -> None:
        """One request for ``key`` at ``t``."""
        self._last[key] = max(t, self._last.get(key, t))
        x = t / self.half_life_s
        s = self._score.get(key)
        if s is None:
            self._score[key] = x
            return
        hi, lo = (s, x) if s >= x else (x, s)
        self._score[key] = hi + math.log2(1.0 + 2.0 ** (lo - hi))

    def knows(self, key: Any) -> bool:
        return key in self._score

    def forget_idle(self, now: float, idle_s: float, keep: Iterable[Any] = ()) -> list[Any]:
        """Drop the count of every key without a request for ``idle_s`` (except ``keep``); returns them. A
        service that runs for months must not remember every name it ever saw."""
        kept = set(keep)
        gone = [k for k, t in self._last.items() if now - t > idle_s and k not in kept]
        for k in gone:
            del self._last[k]
            del self._score[k]
        return gone

    def set_forecast(self, outlook: Outlook | Mapping[Any, float] | None) -> None:
        """The forecaster's latest word (an ``Outlook``; plain rates are held at their word, for all time; None:
        nothing ahead, every model's rate is its decayed count)."""
        if outlook is None:
            outlook = {}
        if not isinstance(outlook, Outlook):
            outlook = Outlook.flat(outlook)
        self._outlook = outlook
        self._row = {k: i for i, k in enumerate(outlook.keys)}
        self.forecast = outlook.mean_rates()

    def evicted(self, key: Any, t: float) -> None:
        """``key`` was evicted at ``t`` to make room: its idle age feeds the characteristic time."""
        last = self._last.get(key)
        if last is not None:
            self._keep.add(t - last, t)

    def keep_time(self) -> float:
        """The characteristic time: the mean idle age at which models were evicted to make room (0 before any)."""
        return self._keep.value()

    # -- rates and worth --------------------------------------------------------

    def recent_rate(self, key: Any, t: float) -> float:
        """Requests per second from the decayed count (count x ln 2 / half-life), at most 1 / the idle age.

        The decayed count assumes the rate held over the half-life; a model's
        silence since its last request is evidence it did not. Request
        inter-arrival times are heavy-tailed (Azure Functions: Shahrad et al.,
        ATC'20), and for a Pareto tail of shape 1 the hazard after an idle age
        ``a`` is ``1 / a``: a model idle for three days is not expected back
        within the hour however busy it was before. No constant."""
        s = self._score.get(key)
        if s is None:
            return 0.0
        return _idle_capped(float(2.0 ** (s - t / self.half_life_s) * _LN2 / self.half_life_s), self._last[key], t)

    def _shares(self, o: Outlook, t: float) -> tuple[np.ndarray, float]:
        """Each outlook interval's share of the characteristic time from ``t``, and the share the outlook does
        not cover (the decayed count's). Before any eviction (no characteristic time yet) the instant ``t``."""
        edges, T = o.edges, self.keep_time()
        if T > _INSTANT:
            a, b = t, t + T
            share = (np.clip(edges[1:], a, b) - np.clip(edges[:-1], a, b)) / T
            covered = max(0.0, min(b, float(edges[-1])) - max(a, float(edges[0])))
            rest = (T - covered) / T
        else:
            share = np.zeros(len(edges) - 1)
            i = int(np.searchsorted(edges, t, side="right")) - 1
            if 0 <= i < len(share):
                share[i] = 1.0
            rest = 0.0 if 0 <= i < len(share) else 1.0
        return share, rest

    def rate(self, key: Any, t: float) -> float:
        """Expected requests per second over the characteristic time from ``t``: the outlook's where it covers
        it, the decayed rate for the rest (module docstring); the decayed rate alone without a forecast."""
        row = self._row.get(key)
        recent = self.recent_rate(key, t)
        if row is None or self._outlook is None:
            return recent
        share, rest = self._shares(self._outlook, t)
        return float(self._outlook.density[row] @ share) + recent * rest

    def worth(self, c: Candidate, t: float) -> float:
        """Seconds of waiting saved per GB-hour held (a zero-size model counts as one byte)."""
        return self.rate(c.key, t) * c.load_seconds * 3600.0 / (max(c.size_bytes, 1) / 1e9)

    def explain(self, c: Candidate, t: float) -> str:
        """A model's worth and where its rate comes from, in a reason a person can check."""
        source = "forecast" if c.key in self._row else "recent requests"
        return (f"{self.rate(c.key, t) * 3600:.2f} requests/h expected ({source}) x load {c.load_seconds:.1f} s "
                f"/ {c.size_bytes / 1e9:.2f} GB = worth {self.worth(c, t):.1f} s per GB-hour")

    def _scorer(self, t: float) -> Callable[[Candidate], tuple[float, float, float]]:
        """``rate``, ``worth`` and the tie-break (the decayed rate x load s per byte: among equal worth, the
        most recently busy stay) for many candidates at one ``t``: ``rate`` and ``worth``'s arithmetic, with
        what does not depend on the candidate read once (a decision scans every model, and the replay decides
        at every load's end)."""
        ahead: list[float] = []
        rest = 1.0
        if self._outlook is not None:
            share, rest = self._shares(self._outlook, t)
            ahead = (self._outlook.density @ share).tolist()
        rows, score, last, hl = self._row, self._score, self._last, self.half_life_s
        x = t / hl

        def scored(c: Candidate) -> tuple[float, float, float]:
            s = score.get(c.key)
            recent = 0.0 if s is None else _idle_capped(float(2.0 ** (s - x) * _LN2 / hl), last[c.key], t)
            row = rows.get(c.key)
            r = recent if row is None else ahead[row] + recent * rest
            size = max(c.size_bytes, 1)
            return r, r * c.load_seconds * 3600.0 / (size / 1e9), recent * c.load_seconds / size

        return scored

    # -- decisions --------------------------------------------------------------

    def victims(self, resident: Sequence[Candidate], need_bytes: int, t: float) -> list[Any] | None:
        """The evictions that free ``need_bytes``: lowest worth first, then those the others already make room
        for put back (most worth first). None when the evictable models cannot free enough."""
        if need_bytes <= 0:
            return []
        scored = self._scorer(t)
        pool = sorted((c for c in resident if c.evictable), key=lambda c: scored(c)[1:])
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
        scored = self._scorer(t)
        return [c.key for c in resident if c.evictable and scored(c)[1] < self.vram_cost]

    def prefetch(self, absent: Sequence[Candidate], resident: Sequence[Candidate], free_bytes: int,
                 t: float) -> tuple[Any, list[Any]] | None:
        """The absent model to load now (the loader is idle) and the evictions it needs, or None.

        The highest-worth absent model with a positive rate, worth at least
        ``vram_cost``, worth more than each model it displaces (a prefetch that
        would itself be the next victim only churns the loader: in the replays
        of docs/replay.md most such prefetches were evicted before any request),
        whose displaced models' ``rate x load_s`` sums to less than its own (it
        is expected to save more waiting per second than they do) and whose
        displaced models' rates sum to less than its own (it is expected to
        avoid more cold starts per second than they will cost: the objective's
        first term at ``vram_cost`` 0). Only the
        best candidate is considered; if it does not pay, neither would a worse
        one displacing the same models.
        """
        scored = self._scorer(t)
        best: Candidate | None = None
        best_rate = 0.0
        best_order = (0.0, 0.0)
        for c in absent:
            r, w, tie = scored(c)
            if r <= 0:
                continue
            if best is None or (w, tie) > best_order:
                best, best_rate, best_order = c, r, (w, tie)
        if best is None or best_order[0] < self.vram_cost:
            return None
        need = best.size_bytes - free_bytes
        gone = self.victims(resident, need, t)
        if gone is None:
            return None
        by_key = {c.key: c for c in resident}
        incoming = best_order[0]
        out = [scored(by_key[k]) for k in gone]
        if any(w >= incoming for _, w, _ in out):
            return None
        lost = sum(r * by_key[k].load_seconds for k, (r, _, _) in zip(gone, out, strict=True))
        if lost >= best_rate * best.load_seconds:
            return None
        if sum(r for r, _, _ in out) >= best_rate:  # the objective counts cold starts first: fewer expected
            return None
        return best.key, gone

    def step(self, resident: Sequence[Candidate], absent: Sequence[Candidate], free_bytes: int,
             t: float) -> Step | None:
        """The decision at ``t`` when the loader would otherwise idle, or None when nothing pays.

        In order: the resident models worth less than ``vram_cost`` go; a pinned
        model that is absent is loaded (making room lowest worth first); the
        prefetch that pays (``prefetch``). Each accepted prefetch raises the
        resident set's total ``rate x load_s``, so repeated steps at one instant
        end.
        """
        gone = self.expendable(resident, t)
        if gone:
            return Step(gone, None, f"not worth its memory at vram_cost {self.vram_cost:g} s per GB-hour")
        for c in absent:
            if c.pinned:
                room = self.victims(resident, c.size_bytes - free_bytes, t)
                if room is not None:
                    return Step(room, c.key, "pinned")
        pick = self.prefetch(absent, resident, free_bytes, t)
        if pick is None:
            return None
        by_key = {c.key: c for c in absent}
        return Step(pick[1], pick[0], f"prewarm: {self.explain(by_key[pick[0]], t)}")


def plan(state: PlanningState, resident: Sequence[Candidate], absent: Sequence[Candidate], budget_bytes: int,
         t: float) -> list[PlanAction]:
    """The steps ``state`` would take at ``t`` from this resident set, carried out on paper (loads done at once):
    the unloads and loads in order, then a ``keep`` for each resident model that stays."""
    held = {c.key: c for c in resident}
    out = {c.key: c for c in absent}
    used = sum(c.size_bytes for c in resident)
    actions: list[PlanAction] = []
    for _ in range(len(held) + len(out) + 1):
        s = state.step(list(held.values()), list(out.values()), budget_bytes - used, t)
        if s is None:
            break
        for k in s.unload:
            c = held.pop(k)
            used -= c.size_bytes
            out[k] = Candidate(k, c.size_bytes, c.load_seconds)
            why = s.why if s.load is None else f"make room for {s.load}: lowest worth, {state.explain(c, t)}"
            actions.append(PlanAction(str(k), "unload", why, used))
        if s.load is not None:
            c = out.pop(s.load)
            held[s.load] = c
            used += c.size_bytes
            actions.append(PlanAction(str(s.load), "load", s.why, used))
    stay = [PlanAction(str(c.key), "keep", f"worth its place: {state.explain(c, t)}", used)
            for c in resident if c.key in held]
    return actions + stay
