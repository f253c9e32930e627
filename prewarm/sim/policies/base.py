"""What every replay policy shares: the request path on the simulated GPU.

A policy sees requests one at a time, in trace order, and nothing after the one
it is handling (the oracle excepted, by definition). Timed work between requests
(a keep-alive running out, a pre-warm, a periodic re-plan) is done by ``advance``:
the replay loop calls it at ``next_event``, interleaved in time order with the
GPU's load starts, so no per-second loop is needed.

The GPU calls back into the policy at the moment a queued load starts:
``wanted`` (is a prefetch still wanted), ``make_room`` (which resident models to
evict, through ``victim``) and ``on_load``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from prewarm.sim.device import ABSENT, INF, PRESENT, QUEUED, SimGPU
from prewarm.sim.trace import Trace

__all__ = ["ABSENT", "INF", "PRESENT", "QUEUED", "Policy"]


class Policy:
    """Base request path: warm if resident; wait for a loading or queued load; else queue a load on demand."""

    name: ClassVar[str] = "base"
    gpu: SimGPU
    next_event: float

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        """Attach to a fresh GPU for one replay; subclasses set up per-model state here."""
        self.gpu = gpu
        self.trace = trace
        self.next_event = INF
        gpu.policy = self

    def advance(self, x: float) -> None:
        """Carry out the timed actions due at ``x`` (called with ``x == next_event``); set the next one."""
        self.next_event = INF

    def touch(self, i: int, m: int, t: float, hit: bool) -> None:
        """Bookkeeping when request ``i`` for model ``m`` arrives at ``t`` (``hit``: it was resident)."""

    def served(self, m: int, end: float) -> None:
        """Model ``m`` finished serving its latest request(s) at ``end`` (keep-alive timers start here)."""

    def on_evict(self, m: int) -> None:
        """Forget per-model residency state when ``m`` leaves."""

    def on_load(self, m: int, start: float, ready: float, demand: bool) -> None:
        """``m`` started loading at ``start`` (ready at ``ready``); ``demand``: requests were waiting for it."""
        if demand:
            self.served(m, ready)

    def wanted(self, m: int, s: float) -> bool:
        """Whether a prefetch of ``m`` queued earlier is still wanted when it reaches the loader at ``s``."""
        return True

    def victim(self, m: int, t: float) -> int | None:
        """The resident model to evict to make room for ``m`` at ``t``; None if there is none."""
        raise NotImplementedError

    def is_live(self, m: int, t: float) -> bool:
        """Whether a present model still counts as present at ``t`` (keep-alive policies expire lazily)."""
        return True

    def evict(self, m: int, t: float) -> None:
        self.gpu.evict(m, t)
        self.on_evict(m)

    def make_room(self, m: int, t: float) -> bool:
        """Evict resident models (``victim`` order) until ``m`` fits; called by the GPU when ``m``'s load starts."""
        gpu = self.gpu
        while gpu.used + gpu.sizes[m] > gpu.budget:
            v = self.victim(m, t)
            if v is None:
                return False
            self.evict(v, t)
        return True

    def request(self, i: int, m: int, t: float) -> None:
        """Serve request ``i``; a cold one gets its added latency in ``gpu.wait[i]`` (now, or when its load starts)."""
        gpu = self.gpu
        st = gpu.status[m]
        if st == PRESENT and self.is_live(m, t):
            ready = gpu.ready_at[m]
            if ready <= t:
                self.touch(i, m, t, True)
                self.served(m, t)
                return
            gpu.wait[i] = ready - t
            self.touch(i, m, t, False)
            self.served(m, ready)
            return
        self.touch(i, m, t, False)
        if st == QUEUED:
            gpu.add_waiter(m, i, t)
        else:
            gpu.enqueue(m, t, i)

    def report(self) -> dict[str, Any]:
        """Policy-specific figures for the output (e.g. training time); none by default."""
        return {}

    def finish(self, t_end: float) -> None:
        """End of trace: close the books."""
        self.gpu.finish(t_end)


class KeepAliveExpiry(Policy):
    """Policies whose models stay for a keep-alive after use (per-model deadline in ``self.expire``).

    Deadlines are handled lazily: when a load does not fit, and at the end of the
    trace, every model whose deadline has passed is unloaded at that deadline, so
    its VRAM-GB-hours stop there rather than when it was noticed.
    """

    expire: list[float]

    def expirable(self) -> list[int]:
        """The resident models that may carry a deadline."""
        raise NotImplementedError

    def _expire_due(self, t: float) -> None:
        expire = self.expire
        for v in [v for v in self.expirable() if expire[v] <= t]:
            self.evict(v, expire[v])

    def make_room(self, m: int, t: float) -> bool:
        if not self.gpu.fits(m):
            self._expire_due(t)
        return super().make_room(m, t)

    def finish(self, t_end: float) -> None:
        self._expire_due(t_end)
        super().finish(t_end)


class LowestFirst(Policy):
    """Policies that evict the resident model of lowest ``rank`` (least recently asked for among equals), with no
    timer and no prefetch: greedy-dual's priority, decayed LFU's count. Subclasses keep ``rank`` up to date."""

    rank: list[float]

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        super().bind(gpu, trace)
        self.last = [0.0] * trace.n_models
        self.resident: set[int] = set()

    def touch(self, i: int, m: int, t: float, hit: bool) -> None:
        self.last[m] = t

    def on_load(self, m: int, start: float, ready: float, demand: bool) -> None:
        self.resident.add(m)
        super().on_load(m, start, ready, demand)

    def on_evict(self, m: int) -> None:
        self.resident.discard(m)

    def victim(self, m: int, t: float) -> int | None:
        best: int | None = None
        key = (0.0, 0.0)
        rank, last, is_resident = self.rank, self.last, self.gpu.is_resident
        for v in self.resident:
            if v == m or not is_resident(v, t):
                continue
            k = (rank[v], last[v])
            if best is None or k < key:
                best, key = v, k
        return best
