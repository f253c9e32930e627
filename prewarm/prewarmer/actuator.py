"""The only code that changes the upstream: loads, unloads and keep-alives, each one a `prewarm_actions` row.

The callers hold `lock` around a decision and the action it leads to, one at a
time as the upstream does them, so a decision is never taken on a resident set
another action is changing. A model being unloaded is in `evicting` until the
upstream answers: a request for it meanwhile treats it as gone (it waits, then
makes room like any cold request) so the upstream never reloads it beside a
newcomer. A load refuses to pass the budget, whoever asked for it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prewarm.backends.base import Backend
from prewarm.errors import BackendError
from prewarm.prewarmer.metrics import PrewarmMetrics
from prewarm.prewarmer.residency import ResidencyTracker


class Actuator:
    def __init__(self, backend: Backend, tracker: ResidencyTracker, store: Any | None, metrics: PrewarmMetrics,
                 clock: Callable[[], float], keep_alive: str, resident_bytes: Callable[[], int],
                 budget_bytes: Callable[[], int]) -> None:
        self.backend = backend
        self.tracker = tracker
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.keep_alive = keep_alive
        self.resident_bytes = resident_bytes
        self.budget_bytes = budget_bytes
        self.lock = asyncio.Lock()
        self.evicting: set[str] = set()
        self.last_actions: deque[dict[str, Any]] = deque(maxlen=50)

    def record(self, model: str, action: str, reason: str, before: int | None, after: int | None,
               duration_ms: float, ok: bool, error: str | None, began: float | None = None) -> None:
        """One prewarm_actions row; ``ts`` is when the action began (the prewarmer's clock; now by default)."""
        ts = datetime.fromtimestamp(self.clock() if began is None else began, UTC)
        row = dict(ts=ts, model=model, action=action, reason=reason, vram_before=before, vram_after=after,
                   duration_ms=duration_ms, ok=ok, error=error)
        self.last_actions.append(row)
        if self.store is not None:
            self.store.put_rows("prewarm_actions", [row])

    def last_error(self) -> str | None:
        return self.last_actions[-1]["error"] if self.last_actions else None

    async def unload(self, model: str, reason: str) -> bool:
        before = self.resident_bytes()
        began, t0 = self.clock(), time.perf_counter()
        self.evicting.add(model)
        try:
            await self.backend.unload(model)
        except BackendError as exc:
            self.record(model, "unload", reason, before, before, _ms(t0), False, str(exc), began)
            return False
        finally:
            self.evicting.discard(model)
        self.tracker.mark_unloaded(model)
        await self.tracker.refresh()
        self.metrics.evicted(model)
        self.record(model, "unload", reason, before, self.resident_bytes(), _ms(t0), True, None, began)
        return True

    async def load(self, model: str, size: int, reason: str) -> bool:
        before = self.resident_bytes()
        budget = self.budget_bytes()
        if before + size > budget:
            self.record(model, "load", reason, before, before, 0.0, False,
                        f"skipped: {before + size} bytes would exceed the {budget}-byte budget now")
            return False
        began, t0 = self.clock(), time.perf_counter()
        self.tracker.warming.add(model)  # a request for it meanwhile waits for this load: cold
        try:
            await self.backend.load(model, keep_alive=self.keep_alive)
        except BackendError as exc:
            self.record(model, "load", reason, before, before, _ms(t0), False, str(exc), began)
            return False
        finally:
            self.tracker.warming.discard(model)
        self.tracker.mark_resident(model)
        await self.tracker.refresh()
        self.metrics.loaded(model, time.perf_counter() - t0)
        self.record(model, "load", reason, before, self.resident_bytes(), _ms(t0), True, None, began)
        return True

    async def keep(self, model: str, reason: str) -> bool:
        """Renew the upstream's keep-alive (Ollama: a /v1 request may have reset its timer; same runner options,
        so no reload); a no-op on upstreams without one."""
        now = self.resident_bytes()
        t0 = time.perf_counter()
        ok, error = True, None
        try:
            await self.backend.keep(model, self.keep_alive)
        except BackendError as exc:
            ok, error = False, str(exc)
        self.record(model, "keep", reason, now, now, _ms(t0), ok, error)
        return ok


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
