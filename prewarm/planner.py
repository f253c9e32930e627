"""The prewarm planner: which models should be resident, and in which order to get there.

Pure functions, no I/O, so the live prewarmer and the trace replay run exactly the
same decisions and both can be tested exhaustively.

A model's *value* is what a cold start would cost if it is asked for and not
resident: ``p_any x load_seconds`` (expected seconds of added latency over the
horizon). Its *density* is value per byte of VRAM. The budget is filled greedily by
density, which is the classic fractional-knapsack heuristic and good enough when
models are small compared with the budget.

Rules, in order of precedence:

* a resident model with requests in flight is never evicted, and neither is a
  resident pinned model — even when that leaves the resident set over budget
  (then only evictions happen);
* pinned models that are not resident are loaded first when they fit;
* a resident model keeps its place unless a candidate beats its density by the
  hysteresis factor, so small forecast changes do not swap models back and forth
  (each swap costs a full load);
* a model whose ``p_any`` is below ``min_p_any`` is not loaded ahead of demand, and a
  resident one is let go once its ``p_any`` falls below ``min_p_any / (1 + hysteresis)``;
* what goes (in a plan or to make room for a request) goes least likely first,
  least recently used among equals: an eviction costs a cold start whatever the
  model's size, so per-byte value decides what to load, not what to drop;
* the budget a plan fills is the caller's: the live prewarmer passes
  ``VramAccount``'s allowance, so prewarming holds no more VRAM-hours than an
  on-demand LRU cache would, and blend each model's idle-time history
  (``RecentDemand``) into ``p_any`` over the horizon that cache keeps an idle model;
* evictions come before loads, loads go one at a time with the soonest expected
  demand first, and no step ever leaves more than the budget resident unless the
  set was already over budget before the plan (and then only evictions happen).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelView:
    """What the planner knows about one model at planning time."""

    model: str
    size_bytes: int
    load_seconds: float
    p_any: float  # P(>=1 request within the planning horizon)
    next_demand_s: float | None = None  # seconds until its likely first request; None = unknown
    resident: bool = False
    in_flight: int = 0
    pinned: bool = False
    idle_s: float | None = None  # seconds since its last request; None = never asked for or unknown

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("ModelView.model must be a non-empty name")
        if self.size_bytes < 0:
            raise ValueError(f"{self.model}: size_bytes must be >= 0, got {self.size_bytes}")
        if not (math.isfinite(self.load_seconds) and self.load_seconds >= 0):
            raise ValueError(f"{self.model}: load_seconds must be finite and >= 0, got {self.load_seconds}")
        if not (0.0 <= self.p_any <= 1.0):
            raise ValueError(f"{self.model}: p_any must be in [0, 1], got {self.p_any}")
        if self.in_flight < 0:
            raise ValueError(f"{self.model}: in_flight must be >= 0, got {self.in_flight}")
        if self.idle_s is not None and not self.idle_s >= 0:
            raise ValueError(f"{self.model}: idle_s must be >= 0 or None, got {self.idle_s}")

    @property
    def value(self) -> float:
        """Expected seconds of cold-start latency avoided by having it resident."""
        return self.p_any * self.load_seconds

    @property
    def density(self) -> float:
        """Value per byte; a zero-size model counts as one byte so it sorts first, not as a division error."""
        return self.value / max(self.size_bytes, 1)


@dataclass(frozen=True, slots=True)
class PlanAction:
    model: str
    action: str  # "load" | "unload" | "keep"
    reason: str
    resident_bytes_after: int  # bytes resident once this action is done
    displaced: bool = False  # an unload only to make room for the plan's loads (the model is still expected)


@dataclass(frozen=True)
class PlanConfig:
    hysteresis: float = 0.25  # a resident model is only displaced by a candidate whose value density is this much higher
    min_p_any: float = 0.05  # below this, a model is not worth loading ahead of demand

    def __post_init__(self) -> None:
        if not (self.hysteresis >= 0 and math.isfinite(self.hysteresis)):
            raise ValueError(f"hysteresis must be finite and >= 0, got {self.hysteresis}")
        if not (0.0 <= self.min_p_any <= 1.0):
            raise ValueError(f"min_p_any must be in [0, 1], got {self.min_p_any}")


def _check(models: Sequence[ModelView], budget_bytes: int) -> None:
    if budget_bytes < 0:
        raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
    seen: set[str] = set()
    for m in models:
        if m.model in seen:
            raise ValueError(f"model {m.model!r} appears twice in the planner input")
        seen.add(m.model)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def _describe(m: ModelView) -> str:
    return f"p_any={m.p_any:.2f} x load {m.load_seconds:.1f}s = {m.value:.2f}s expected cold-start cost, {_gb(m.size_bytes)}"


class RecentDemand:
    """Each model's idle-time history: P(a request within a horizon | idle so far), and its idle time.

    The forecaster sees whole windows and the plan runs once per window; what a
    model did lately says more about the next minutes and hours: a model asked
    for every few seconds is wanted again soon, one whose requests come in
    bursts three minutes apart is wanted again in three minutes, one asked for
    each morning is not wanted at noon. So each model keeps a histogram of the
    gaps between its requests (log-spaced bins, each gap weighing half as much
    per ``memory_s`` of age, so demand that changed is forgotten), and the
    probability of a request within ``h`` after ``a`` seconds idle is the share
    of the gaps longer than ``a`` that end by ``a + h``, the hazard of the idle
    time: ``(S(a) - S(a + h) + prior) / (S(a) + 1)``. One pseudo-gap, with
    ``prior = h / (a + 2h)`` (the same hazard for a heavy-tailed, Lomax, idle time
    of scale h: one half right after a request, less the longer the model has
    been idle), keeps a model with little history, or idle longer than ever
    before, from reading as certain or impossible. The live prewarmer reads
    recency this way (the replay's forecast policy now runs prewarm.planning).
    Keys are whatever the caller names models by.
    """

    MEMORY_S = 86400.0  # a gap weighs half as much per day of age: demand follows the working day
    BIN_RATIO = 1.5  # bin k holds gaps in [1.5^k, 1.5^(k+1)) s (bin 0 also the shorter ones); 48 bins reach 9 years
    BINS = 48
    _REBASE = 64.0  # weights are kept as 2^(age / memory_s) up to 2^64, then rescaled

    def __init__(self, memory_s: float = MEMORY_S) -> None:
        if not (memory_s > 0 and math.isfinite(memory_s)):
            raise ValueError(f"memory_s must be finite and > 0, got {memory_s}")
        self.memory_s = float(memory_s)
        self.last: dict[Any, float] = {}
        self._gaps: dict[Any, list[float]] = {}  # key -> weighted gap counts per bin, in units of its _since weight
        self._since: dict[Any, float] = {}  # key -> time at which a gap weighs 1 in _gaps
        self._tails: dict[Any, list[float]] = {}  # key -> suffix sums of _gaps, until the next gap
        self._log_ratio = math.log(self.BIN_RATIO)

    def _bin(self, x: float) -> int:
        return 0 if x < self.BIN_RATIO else min(self.BINS - 1, int(math.log(x) / self._log_ratio))

    def observe(self, key: Any, t: float) -> None:
        """One request at ``t``."""
        last = self.last.get(key)
        self.last[key] = t if last is None else max(last, t)
        if last is None:
            return
        counts = self._gaps.get(key)
        if counts is None:
            counts = self._gaps[key] = [0.0] * self.BINS
            self._since[key] = t
        age = (t - self._since[key]) / self.memory_s
        if age > self._REBASE:
            scale = 0.5**age
            counts[:] = [c * scale for c in counts]
            self._since[key] = t
            age = 0.0
        counts[self._bin(max(0.0, t - last))] += 2.0**age
        self._tails.pop(key, None)

    def forget_idle(self, now: float, idle_s: float, keep: Iterable[Any] = ()) -> list[Any]:
        """Drop the history of every key without a request for `idle_s` seconds (except `keep`); returns them.

        A service that runs for months must not remember every name it ever saw.
        """
        kept = set(keep)
        gone = [k for k, t in self.last.items() if now - t > idle_s and k not in kept]
        for k in gone:
            self.last.pop(k, None)
            self._gaps.pop(k, None)
            self._since.pop(k, None)
            self._tails.pop(k, None)
        return gone

    def _survival(self, counts: list[float], tails: list[float], x: float) -> float:
        """Weighted count of gaps longer than ``x`` (log-linear within a bin)."""
        if x < 1.0:
            return tails[0]
        j = self._bin(x)
        inside = (self._log_ratio * (j + 1) - math.log(x)) / self._log_ratio
        return tails[j + 1] + counts[j] * min(1.0, max(0.0, inside))

    def p_within(self, key: Any, t: float, horizon_s: float) -> float | None:
        """P(a request for ``key`` within ``horizon_s`` of ``t``) from its idle time; None if never asked for."""
        last = self.last.get(key)
        if last is None:
            return None
        idle = max(0.0, t - last)
        prior = horizon_s / (idle + 2.0 * horizon_s) if horizon_s > 0 else 0.0
        counts = self._gaps.get(key)
        if counts is None:
            return prior
        tails = self._tails.get(key)
        if tails is None:
            tails = [0.0] * (self.BINS + 1)
            for k in range(self.BINS - 1, -1, -1):
                tails[k] = tails[k + 1] + counts[k]
            self._tails[key] = tails
        now = 2.0 ** ((last - self._since[key]) / self.memory_s)  # the latest gap's weight, in the stored units
        longer = self._survival(counts, tails, idle) / now
        ended = longer - self._survival(counts, tails, idle + horizon_s) / now
        return float(min(1.0, (ended + prior) / (longer + 1.0)))

    def idle_s(self, key: Any, t: float) -> float | None:
        last = self.last.get(key)
        return None if last is None else max(0.0, t - last)

    def blend(self, key: Any, p_forecast: float, t: float, horizon_s: float) -> float:
        """P(any request within ``horizon_s``) from the window forecast and the idle-time history, as independent
        sources of demand: 1 - (1 - p_forecast) x (1 - p_within)."""
        p_recent = self.p_within(key, t, horizon_s)
        if p_recent is None:
            return p_forecast
        return 1.0 - (1.0 - p_forecast) * (1.0 - p_recent)


class VramAccount:
    """Holds prewarming to the VRAM-hours an on-demand LRU cache of the same requests would hold.

    Free VRAM is not idle on a serving GPU: it is KV cache, batch room, another
    tenant's model. A prewarmer that avoids cold starts by holding more memory
    than loading on demand would shows nothing about its forecast, so the plan
    and ``make_room`` are given an *allowance* instead of the whole budget.

    A shadow LRU cache (same budget, loads at once) sees every request. The
    account accrues, per second, ``TARGET`` x the shadow's bytes minus the bytes
    actually held; the allowance is the shadow's bytes + balance / ``horizon_s``,
    within [0, budget]. VRAM saved while demand was low is spent over the next
    forecast horizon, when the forecast says it matters (the morning after a
    quiet night), and VRAM overspent is paid back the same way. A model is then
    loaded ahead of demand only in room an on-demand cache would have held
    anyway, and what fills that room is chosen by forecast, not recency.

    ``TARGET`` is below 1 because the shadow is an estimate: it loads at once, a
    real cache waits for the loader. At 1 the replays (docs/replay.md) came out
    up to 0.1 % above a real LRU's GB-hours; 0.5 % under leaves five times that.
    It weighs only on the balance, so a fresh account (a restarted serve) allows
    everything the cache holds and the margin is taken over the horizon.

    Until it has seen a request (or been seeded) there is nothing to compare
    with (a serve bootstrapped from a trace, an empty log): the allowance is the
    budget and nothing is booked. The caller then seeds it with the resident set
    at the first request, so the models prewarmed meanwhile count as cached.

    The shadow also says how far ahead keeping a model must look
    (``keep_horizon_s``): an on-demand cache lets a model go once it has been idle
    longer than its least recently used entry, so a model is worth its place if it
    is asked for within that time, seconds on a small GPU, hours on a big one.
    """

    TARGET = 0.995

    def __init__(self, horizon_s: float) -> None:
        if not (horizon_s > 0 and math.isfinite(horizon_s)):
            raise ValueError(f"horizon_s must be finite and > 0, got {horizon_s}")
        self.horizon_s = float(horizon_s)
        self.lru: OrderedDict[Any, int] = OrderedDict()  # the shadow cache, least recently used first
        self.lru_bytes = 0
        self.used_at: dict[Any, float] = {}  # the time of each cached key's latest request, where known
        self.balance = 0.0  # byte-seconds held under (> 0) or over (< 0) the target so far
        self.seen = False  # a request or a seed arrived: the account has a reference
        self._t: float | None = None

    def settle(self, t: float, held_bytes: int) -> None:
        """Book the time since the last call, during which ``held_bytes`` were resident."""
        if self.seen and self._t is not None and t > self._t:
            self.balance += (self.TARGET * self.lru_bytes - held_bytes) * (t - self._t)
        if self._t is None or t > self._t:
            self._t = t

    def request(self, key: Any, size_bytes: int, t: float, held_bytes: int, budget_bytes: int) -> None:
        """A request for ``key`` at ``t``: the shadow cache loads it (evicting its least recently used) or touches it."""
        self.settle(t, held_bytes)
        self.seed([(key, size_bytes, t)], budget_bytes)

    def seed(self, keys: Iterable[tuple[Any, int, float | None]], budget_bytes: int) -> None:
        """Put (key, size, time of its latest request or None) into the shadow cache, oldest use first, without
        booking time (e.g. from the request log)."""
        lru, used_at = self.lru, self.used_at
        for key, size, t in keys:
            self.seen = True
            old = lru.pop(key, None)
            if old is not None:
                self.lru_bytes -= old
            used_at.pop(key, None)
            if size > budget_bytes:
                continue  # larger than the budget: no cache could hold it
            lru[key] = size
            if t is not None:
                used_at[key] = t
            self.lru_bytes += size
            while self.lru_bytes > budget_bytes:
                gone, gone_size = lru.popitem(last=False)
                used_at.pop(gone, None)
                self.lru_bytes -= gone_size

    def keep_horizon_s(self, t: float, floor_s: float) -> float:
        """How long a model idle now would stay in the on-demand cache: the idle time of its least recently used
        entry (the cache's characteristic time), at least ``floor_s``."""
        if not self.lru:
            return floor_s
        used = self.used_at.get(next(iter(self.lru)))
        return floor_s if used is None else max(floor_s, t - used)

    def allowance(self, t: float, held_bytes: int, budget_bytes: int) -> int:
        """Bytes the plan may fill at ``t``: the cache's bytes plus the balance spread over the horizon, within the budget."""
        if not self.seen:
            return budget_bytes
        self.settle(t, held_bytes)
        want = self.lru_bytes + self.balance / self.horizon_s
        return int(max(0.0, min(float(budget_bytes), want)))

    def room_limit(self, t: float, held_bytes: int, budget_bytes: int, request: bool) -> int:
        """The bytes a load may make room within: the allowance, or for a load requests wait for the larger of
        it and the cache's bytes (a request never evicts a model an on-demand cache would keep; the next plan
        brings the set back within the allowance)."""
        allowance = self.allowance(t, held_bytes, budget_bytes)
        return max(allowance, self.lru_bytes) if request else allowance


def _eviction_order(m: ModelView) -> tuple[float, float, int, str]:
    """Least likely to be asked for first; on a tie (e.g. p_any 0 for every model the forecast has no opinion
    on) the least recently used first.

    Probability, not value density: evicting a model costs a cold start if it is
    asked for before it could be back, whatever its size, and the load that brings
    it back holds the single loader for everyone. Ranking by value per byte
    evicted the big models first and kept them cycling through the loader: on the
    Azure Functions replay (docs/replay.md) that tripled the cold-start rate.
    """
    idle = m.idle_s if m.idle_s is not None else math.inf
    return (m.p_any, -idle, -m.size_bytes, m.model)


def _forced(m: ModelView) -> bool:
    """Resident models the plan may not touch."""
    return m.resident and (m.in_flight > 0 or m.pinned)


def plan(models: Sequence[ModelView], budget_bytes: int, config: PlanConfig = PlanConfig()) -> list[PlanAction]:
    """Ordered actions that bring the resident set to the best one within the budget.

    Returns ``keep`` actions for resident models that stay (first), then ``unload``
    (lowest density first), then ``load`` (soonest demand first, then highest value).
    Applying the result and planning again with the same inputs gives only ``keep``s.
    """
    _check(models, budget_bytes)
    boost = 1.0 + config.hysteresis
    resident_min_p = config.min_p_any / boost

    forced = [m for m in models if _forced(m)]
    used = sum(m.size_bytes for m in forced)
    chosen: dict[str, str] = {}
    for m in forced:
        chosen[m.model] = "requests in flight" if m.in_flight > 0 else "pinned"

    pinned_new = sorted(
        (m for m in models if m.pinned and not m.resident),
        key=lambda m: (m.next_demand_s if m.next_demand_s is not None else math.inf, -m.value, m.model),
    )
    for m in pinned_new:
        if used + m.size_bytes <= budget_bytes:
            chosen[m.model] = "pinned"
            used += m.size_bytes

    def eligible(m: ModelView) -> bool:
        if m.resident:
            return m.p_any >= resident_min_p
        return m.p_any >= config.min_p_any and m.value > 0

    def priority(m: ModelView) -> tuple[float, float, str]:
        eff = m.density * boost if m.resident else m.density
        return (-eff, m.next_demand_s if m.next_demand_s is not None else math.inf, m.model)

    rest = sorted((m for m in models if m.model not in chosen and not m.pinned and eligible(m)), key=priority)
    for m in rest:
        if used + m.size_bytes <= budget_bytes:
            chosen[m.model] = _describe(m)
            used += m.size_bytes

    resident_now = sum(m.size_bytes for m in models if m.resident)
    actions: list[PlanAction] = []
    for m in sorted((m for m in models if m.resident and m.model in chosen), key=lambda m: m.model):
        why = chosen[m.model]
        reason = why if why in ("requests in flight", "pinned") else f"worth its place: {why}"
        actions.append(PlanAction(m.model, "keep", reason, resident_now))

    evict = sorted((m for m in models if m.resident and m.model not in chosen), key=_eviction_order)
    for m in evict:
        resident_now -= m.size_bytes
        displaced = m.p_any >= resident_min_p
        if displaced:
            reason = f"displaced by models of higher value density ({_describe(m)})"
        else:
            reason = f"not expected within the horizon (p_any={m.p_any:.3f} < {resident_min_p:.3f})"
        actions.append(PlanAction(m.model, "unload", reason, resident_now, displaced))

    loads = sorted(
        (m for m in models if not m.resident and m.model in chosen),
        key=lambda m: (m.next_demand_s if m.next_demand_s is not None else math.inf, -m.value, m.model),
    )
    for m in loads:
        resident_now += m.size_bytes
        why = chosen[m.model]
        reason = "pinned" if why == "pinned" else f"prewarm: {why}"
        if m.next_demand_s is not None:
            reason += f"; first request expected in {m.next_demand_s:.0f}s"
        actions.append(PlanAction(m.model, "load", reason, resident_now))
    return actions


def make_room(models: Sequence[ModelView], incoming: str, budget_bytes: int) -> list[PlanAction] | None:
    """Evictions that let ``incoming`` load without the upstream exceeding the budget.

    Used before forwarding a request for a model that is not resident, so the
    upstream's own eviction never has to act. Evicts the least likely to be asked
    for first (least recently used among equals), never a model with requests in flight or a pinned one, then puts back any
    eviction that turned out not to be needed (the greedy pass can overshoot).
    Returns [] when no eviction is needed and None when no choice of evictions
    makes room (the caller then forwards anyway or refuses, its choice).
    """
    _check(models, budget_bytes)
    by_name = {m.model: m for m in models}
    if incoming not in by_name:
        raise ValueError(f"make_room: incoming model {incoming!r} is not among the planner's models")
    target = by_name[incoming]
    if target.resident:
        return []
    resident_now = sum(m.size_bytes for m in models if m.resident)
    need = resident_now + target.size_bytes - budget_bytes
    if need <= 0:
        return []
    evictable = sorted(
        (m for m in models if m.resident and m.in_flight == 0 and not m.pinned and m.model != incoming),
        key=_eviction_order,
    )
    chosen: list[ModelView] = []
    freed = 0
    for m in evictable:
        if freed >= need:
            break
        chosen.append(m)
        freed += m.size_bytes
    if freed < need:
        return None
    for m in sorted(chosen, key=lambda m: (-m.p_any, m.idle_s if m.idle_s is not None else math.inf,
                                         m.size_bytes, m.model)):
        if freed - m.size_bytes >= need:
            chosen.remove(m)
            freed -= m.size_bytes

    actions: list[PlanAction] = []
    for m in chosen:
        resident_now -= m.size_bytes
        actions.append(
            PlanAction(
                m.model,
                "unload",
                f"make room for {incoming} ({_gb(target.size_bytes)}) under the {_gb(budget_bytes)} budget; "
                f"lowest value density ({_describe(m)})",
                resident_now,
            )
        )
    return actions
