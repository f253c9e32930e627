"""The simulated GPU of DESIGN.md (Replay): one loader, a VRAM budget, and the bookkeeping behind the metrics.

Semantics, chosen so that every policy is judged by the same clock:

* Loads run one at a time from a single FIFO loader queue. A load asked for at
  ``t`` starts at ``max(t, loader_free)`` and is ready ``load_seconds`` later, so
  its ready time is known when it is queued and no completion event is needed.
* A model's bytes are *committed* from the moment its load is queued; committed
  bytes (resident + loading + queued) never exceed the budget, so resident +
  loading never do either.
* Requests take no service time (no in-flight pinning): a request is served the
  instant its model is ready. A model that is still loading may be chosen for
  eviction; it then leaves the moment its load completes, after the requests
  waiting for it were served. Its memory is counted until then.
* VRAM-GB-hours count a model's bytes from the start of its load (memory is
  filled while loading) until it is evicted, clipped to the scored span.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Interval:
    """One stay of a model in VRAM, for the residency timeline plot."""

    model: int
    start: float
    end: float


@dataclass
class SimGPU:
    sizes: list[int]
    load_seconds: list[float]
    budget: int
    scored_from: float
    scored_to: float
    record_timeline: bool = False
    committed: list[bool] = field(init=False)
    ready_at: list[float] = field(init=False)
    load_start: list[float] = field(init=False)
    used: int = 0
    loader_free: float = float("-inf")
    loads: int = 0
    evictions: int = 0
    byte_seconds: float = 0.0
    load_busy_s: float = 0.0
    timeline: list[Interval] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.sizes)
        self.committed = [False] * n
        self.ready_at = [0.0] * n
        self.load_start = [0.0] * n

    def fits(self, m: int) -> bool:
        return self.used + self.sizes[m] <= self.budget

    def load(self, m: int, t: float) -> float:
        """Queue a load of ``m`` at ``t``; the caller made room. Returns the ready time."""
        if self.committed[m]:
            raise RuntimeError(f"model {m} is already loaded or loading")
        if self.used + self.sizes[m] > self.budget:
            raise RuntimeError(f"load of model {m} at t={t} would exceed the budget")
        start = t if t > self.loader_free else self.loader_free
        ready = start + self.load_seconds[m]
        self.loader_free = ready
        self.committed[m] = True
        self.used += self.sizes[m]
        self.load_start[m] = start
        self.ready_at[m] = ready
        if self.scored_from <= start <= self.scored_to:
            self.loads += 1
            self.load_busy_s += self.load_seconds[m]
        return ready

    def evict(self, m: int, t: float) -> float:
        """Evict ``m`` at ``t`` (or when its load completes, if later). Returns the time it left."""
        if not self.committed[m]:
            raise RuntimeError(f"model {m} is not loaded")
        ready = self.ready_at[m]
        gone = t if t > ready else ready
        self._account(m, gone)
        self.committed[m] = False
        self.used -= self.sizes[m]
        if self.scored_from <= gone <= self.scored_to:
            self.evictions += 1
        return gone

    def _account(self, m: int, gone: float) -> None:
        start = self.load_start[m]
        lo = start if start > self.scored_from else self.scored_from
        hi = gone if gone < self.scored_to else self.scored_to
        if hi > lo:
            self.byte_seconds += self.sizes[m] * (hi - lo)
        if self.record_timeline:
            self.timeline.append(Interval(m, start, gone))

    def finish(self, t_end: float) -> None:
        """Close the books: models still committed stay counted up to ``t_end``."""
        for m, c in enumerate(self.committed):
            if c:
                self._account(m, max(t_end, self.load_start[m]))

    @property
    def loader_utilization(self) -> float:
        """Share of the scored span the loader was busy: near 1, the replay is dominated by the load queue."""
        span = self.scored_to - self.scored_from
        return self.load_busy_s / span if span > 0 else 0.0

    @property
    def vram_gb_hours(self) -> float:
        return self.byte_seconds / 1e9 / 3600.0
