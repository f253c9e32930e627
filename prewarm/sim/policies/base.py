"""What every replay policy shares: the request path on the simulated GPU.

A policy sees requests one at a time, in trace order, and nothing after the one
it is handling (the oracle excepted, by definition). Timed work between requests
(a keep-alive running out, a pre-warm, a periodic re-plan) is done lazily: before
a request at ``t`` is served, ``advance(t)`` carries out everything due up to ``t``
at the time it was due, so no per-second loop is needed.
"""

from __future__ import annotations

from typing import ClassVar

from prewarm.sim.gpu import SimGPU
from prewarm.sim.trace import Trace

INF = float("inf")


class Policy:
    """Base request path: hit if committed (waiting for the load if still loading), else load on demand."""

    name: ClassVar[str] = "base"
    gpu: SimGPU
    next_event: float

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        """Attach to a fresh GPU for one replay; subclasses set up per-model state here."""
        self.gpu = gpu
        self.trace = trace
        self.next_event = INF

    def advance(self, t: float) -> None:
        """Carry out timed actions due at or before ``t`` (only called when ``next_event <= t``)."""
        self.next_event = INF

    def touch(self, i: int, m: int, t: float, end: float, hit: bool) -> None:
        """Bookkeeping after request ``i`` for model ``m`` at ``t`` was served at ``end``."""

    def on_evict(self, m: int) -> None:
        """Forget per-model residency state when ``m`` leaves."""

    def on_load(self, m: int) -> None:
        """Residency state when ``m`` is queued for loading."""

    def victim(self, m: int, t: float) -> int | None:
        """The model to evict to make room for ``m`` at ``t``; None if there is none."""
        raise NotImplementedError

    def is_live(self, m: int, t: float) -> bool:
        """Whether a committed model still counts as resident at ``t`` (keep-alive policies expire lazily)."""
        return True

    def evict(self, m: int, t: float) -> None:
        self.gpu.evict(m, t)
        self.on_evict(m)

    def load(self, m: int, t: float) -> float:
        ready = self.gpu.load(m, t)
        self.on_load(m)
        return ready

    def make_room(self, m: int, t: float) -> bool:
        gpu = self.gpu
        while gpu.used + gpu.sizes[m] > gpu.budget:
            v = self.victim(m, t)
            if v is None:
                return False
            self.evict(v, t)
        return True

    def request(self, i: int, m: int, t: float) -> float:
        """Serve request ``i``; returns -1.0 for a warm start, else the added latency (cold)."""
        if self.next_event <= t:
            self.advance(t)
        gpu = self.gpu
        if gpu.committed[m] and self.is_live(m, t):
            ready = gpu.ready_at[m]
            if ready <= t:
                self.touch(i, m, t, t, True)
                return -1.0
            self.touch(i, m, t, ready, False)
            return ready - t
        if not self.make_room(m, t):
            raise RuntimeError(f"{self.name}: no room for model {self.trace.names[m]} at t={t}")
        ready = self.load(m, t)
        self.touch(i, m, t, ready, False)
        return ready - t

    def report(self) -> dict:
        """Policy-specific figures for the output (e.g. training time); none by default."""
        return {}

    def finish(self, t_end: float) -> None:
        """End of trace: close the books."""
        self.gpu.finish(t_end)
