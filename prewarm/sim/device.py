"""The simulated GPU of DESIGN.md (Replay): one loader with a FIFO queue, a VRAM budget, and the books.

It follows Ollama's scheduler (server/sched.go), which is also how a real GPU
behaves: there is one loader; a load request joins a FIFO queue; VRAM is taken
when the load *starts*, and the evictions that make room for it are decided at
that moment, by the policy, among the models resident then. So, at every instant,
resident models + the one loading model fit the budget, and a queued load holds
no memory (reserving at queue time would let queued loads fill the budget while
little is resident, and evicting a queued model would only queue it again).

* A model is ``ABSENT``, ``QUEUED`` or ``PRESENT`` (loading until ``ready_at``,
  resident after). Only resident models can be evicted: a loading model is busy.
* A request for a queued model waits for its load: it is cold, and its added
  latency (known once the load starts) is ``ready - t``. A request for a loading
  model waits ``ready - t`` as well. Requests take no service time, so a resident
  model is always idle and every resident model is evictable when a load starts.
* A queued load with nobody waiting is a *prefetch*: the policy that queued it
  may cancel it, and is asked once more when it reaches the head whether it still
  wants it.
* A load that cannot fit even after the policy evicted what it would is not
  dropped in silence: it is counted (``failed_loads``) and its waiting requests
  are counted as ``unserved`` (their wait is NaN).
* VRAM-GB-hours count a model's bytes from the start of its load (memory is
  filled while loading) until it is evicted, clipped to the scored span.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prewarm.sim.policies.base import Policy

ABSENT, QUEUED, PRESENT = 0, 1, 2
INF = float("inf")


@dataclass
class Interval:
    """One stay of a model in VRAM (load start to eviction), for the residency timeline plot and the budget test."""

    model: int
    start: float
    end: float


class SimGPU:
    def __init__(self, sizes: list[int], load_seconds: list[float], budget: int, scored_from: float,
                 scored_to: float, n_requests: int, record_timeline: bool = False) -> None:
        n = len(sizes)
        self.sizes = list(sizes)
        self.load_seconds = list(load_seconds)
        self.budget = budget
        self.scored_from = scored_from
        self.scored_to = scored_to
        self.record_timeline = record_timeline
        self.status = [ABSENT] * n
        self.ready_at = [0.0] * n
        self.load_start = [0.0] * n
        self.queued_at = [0.0] * n
        self.waiters: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        self.queue: deque[int] = deque()
        self.wait = [-1.0] * n_requests  # per request: -1 warm, else added seconds (NaN: unserved)
        self.next_start = INF  # when the head of the queue starts loading (INF: queue empty)
        self.loader_free = -INF  # when the current (last started) load is done
        self.used = 0  # bytes of resident models + the loading one
        self.loads = self.evictions = self.failed_loads = self.unserved = self.cancelled = 0
        self.byte_seconds = 0.0
        self.load_busy_s = 0.0
        self.timeline: list[Interval] = []
        self.policy: Policy | None = None

    # -- queries ------------------------------------------------------------

    def fits(self, m: int) -> bool:
        return self.used + self.sizes[m] <= self.budget

    def is_resident(self, m: int, t: float) -> bool:
        return self.status[m] == PRESENT and self.ready_at[m] <= t

    def loader_idle(self, t: float) -> bool:
        return not self.queue and self.loader_free <= t

    # -- the queue ------------------------------------------------------------

    def enqueue(self, m: int, t: float, request: int = -1) -> None:
        """Queue a load of ``m`` at ``t`` (for request ``request``, or a prefetch if -1); starts now if the loader is idle."""
        if self.status[m] != ABSENT:
            raise RuntimeError(f"model {m} is already queued, loading or resident")
        self.status[m] = QUEUED
        self.queued_at[m] = t
        if request >= 0:
            self.waiters[m].append((request, t))
        self.queue.append(m)
        if len(self.queue) == 1:
            if self.loader_free <= t:
                self.start_next(t)
            else:
                self.next_start = self.loader_free

    def add_waiter(self, m: int, request: int, t: float) -> None:
        """Request ``request`` at ``t`` waits for the queued load of ``m``."""
        self.waiters[m].append((request, t))

    def cancel(self, m: int) -> bool:
        """Withdraw a queued prefetch (nobody waiting for it); False if it is not one."""
        if self.status[m] != QUEUED or self.waiters[m]:
            return False
        self.queue.remove(m)
        self.status[m] = ABSENT
        self.cancelled += 1
        self._schedule_head()
        return True

    def _schedule_head(self) -> None:
        if self.queue:
            q = self.queued_at[self.queue[0]]
            self.next_start = q if q > self.loader_free else self.loader_free
        else:
            self.next_start = INF

    def start_next(self, s: float) -> None:
        """The head of the queue starts loading at ``s``; the policy makes room for it now."""
        if self.loader_free < s:
            self.loader_free = s  # idle until now: whatever is decided now happens at s, never earlier
        m = self.queue.popleft()
        waiting = self.waiters[m]
        policy = self.policy
        assert policy is not None, "the engine attaches its policy before the first request"
        if not waiting and not policy.wanted(m, s):
            self.status[m] = ABSENT
            self.cancelled += 1
            self._schedule_head()
            return
        room = policy.make_room(m, s)  # it may ask whether requests wait (self.waiters[m])
        self.waiters[m] = []
        if not room or self.used + self.sizes[m] > self.budget:
            self.status[m] = ABSENT
            self.failed_loads += 1
            for i, _ in waiting:
                self.wait[i] = float("nan")
            self.unserved += len(waiting)
            self._schedule_head()
            return
        self.used += self.sizes[m]
        self.status[m] = PRESENT
        ready = s + self.load_seconds[m]
        self.load_start[m] = s
        self.ready_at[m] = ready
        self.loader_free = ready
        if self.scored_from <= s <= self.scored_to:
            self.loads += 1
            self.load_busy_s += self.load_seconds[m]
        wait = self.wait
        for i, t in waiting:
            wait[i] = ready - t
        self._schedule_head()
        policy.on_load(m, s, ready, bool(waiting))

    # -- evictions and the books ---------------------------------------------

    def evict(self, m: int, t: float) -> None:
        """Evict resident ``m`` at ``t``."""
        if self.status[m] != PRESENT or self.ready_at[m] > t:
            raise RuntimeError(f"model {m} is not resident at t={t}; only resident models can be evicted")
        self._account(m, t)
        self.status[m] = ABSENT
        self.used -= self.sizes[m]
        if self.scored_from <= t <= self.scored_to:
            self.evictions += 1

    def _account(self, m: int, gone: float) -> None:
        start = self.load_start[m]
        lo = start if start > self.scored_from else self.scored_from
        hi = gone if gone < self.scored_to else self.scored_to
        if hi > lo:
            self.byte_seconds += self.sizes[m] * (hi - lo)
        if self.record_timeline:
            self.timeline.append(Interval(m, start, gone))

    def finish(self, t_end: float) -> None:
        """Close the books: models still present stay counted up to ``t_end``."""
        for m, st in enumerate(self.status):
            if st == PRESENT:
                self._account(m, max(t_end, self.load_start[m]))

    @property
    def loader_utilization(self) -> float:
        """Share of the scored span the loader was busy: near 1, the replay is dominated by the load queue."""
        span = self.scored_to - self.scored_from
        return self.load_busy_s / span if span > 0 else 0.0

    @property
    def vram_gb_hours(self) -> float:
        return self.byte_seconds / 1e9 / 3600.0
