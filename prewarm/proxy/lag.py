"""Event-loop lag: how late the loop wakes a task that asked to sleep.

Every request of the proxy shares one event loop, so anything that blocks it (a
slow callback, a synchronous call on the request path) delays every stream at
once. A task sleeping `interval` seconds and measuring how much longer it slept
shows that delay from the outside at the cost of one timer per interval; the last
samples (a fixed-size ring) give the recent maximum and 99th percentile, served by
GET /prewarm/health so load tests can watch it without touching the request path.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np


class LoopLag:
    def __init__(self, interval_s: float = 0.1, keep: int = 600) -> None:
        self.interval_s = interval_s
        self.samples: deque[float] = deque(maxlen=keep)  # seconds of oversleep, newest last
        self.worst_s = 0.0  # since start, not just the ring
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="prewarm-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        clock = time.perf_counter
        while True:
            t0 = clock()
            await asyncio.sleep(self.interval_s)
            late = max(0.0, clock() - t0 - self.interval_s)
            self.samples.append(late)
            if late > self.worst_s:
                self.worst_s = late

    def summary(self) -> dict[str, float | int | None]:
        """Milliseconds: last, p99 and max over the ring, and the worst since start."""
        if not self.samples:
            return {"samples": 0, "last_ms": None, "p99_ms": None, "max_ms": None, "worst_ms": None}
        arr = np.fromiter(self.samples, dtype=float)
        return {
            "samples": len(arr),
            "last_ms": round(arr[-1] * 1000.0, 3),
            "p99_ms": round(float(np.quantile(arr, 0.99)) * 1000.0, 3),
            "max_ms": round(float(arr.max()) * 1000.0, 3),
            "worst_ms": round(self.worst_s * 1000.0, 3),
        }
