"""Which models the upstream holds right now, known without asking on every request.

The proxy must label each request cold or warm the moment it arrives, and a round
trip to /api/ps per request would add latency to every call. So the resident set
is polled in the background and corrected by what the proxy itself sees (a model
that just answered a request is resident). This is the plain ProxyHooks: no
prewarming; the prewarmer holds one and adds its decisions around it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from prewarm.backends.base import BackendError
from prewarm.records import RequestEvent

log = logging.getLogger(__name__)

FetchResident = Callable[[], Awaitable[dict[str, int]]]


class ResidencyTracker:
    def __init__(self, fetch_resident: FetchResident, refresh_s: float,
                 canonical: Callable[[str], str] | None = None) -> None:
        self._fetch = fetch_resident
        self._canonical = canonical
        self.refresh_s = max(0.05, float(refresh_s))
        self.resident: dict[str, int] = {}
        self.in_flight: dict[str, int] = {}
        # models whose load is under way (for a request, or the prewarmer's own): held, not yet ready
        self.warming: set[str] = set()
        self.known = False  # True once one poll has succeeded: before that, residency is unknown
        self.last_error: str | None = None
        self._marked: dict[str, float] = {}  # model -> when the proxy saw it resident
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="prewarm-residency-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def refresh(self) -> None:
        """Poll now. A failed poll empties the set: what a restarted upstream holds is nothing."""
        started = time.monotonic()
        try:
            fresh = await self._fetch()
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, BackendError) as exc:
            if self.last_error is None:
                log.warning("residency: cannot read the resident set (%s); counting every model cold until it "
                            "answers again", exc)
            self.last_error = str(exc) or type(exc).__name__
            # An upstream that does not answer has most likely restarted, and a restarted one holds nothing:
            # the requests that reach it next wait for a load, so they are cold, and the prewarmer makes room.
            self.resident = {}
            self._marked = {}
            return
        # A request that finished while the poll was in flight is newer than the poll.
        for model, when in self._marked.items():
            if when >= started and model not in fresh:
                fresh[model] = self.resident.get(model, 0)
        self._marked = {m: t for m, t in self._marked.items() if t >= started}
        self.resident = fresh
        self.known = True
        self.last_error = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    def mark_resident(self, model: str) -> None:
        self.resident.setdefault(model, 0)
        self._marked[model] = time.monotonic()

    def mark_unloaded(self, model: str) -> None:
        self.resident.pop(model, None)
        self._marked.pop(model, None)

    # -- ProxyHooks ----------------------------------------------------------

    def canonical(self, model: str) -> str:
        return self._canonical(model) if self._canonical is not None else model

    def user_seen(self, user: str) -> None:
        pass  # no prewarming without the prewarmer

    def upstream_problem(self) -> str | None:
        return None if self.last_error is None else f"the upstream does not answer: {self.last_error}"

    def holds(self, model: str) -> bool | None:
        """Whether the upstream holds the model's memory (loaded, or loading: what the budget counts)."""
        if not self.known:
            return None
        if model in self.resident:
            return True
        # Ollama lists "llama3" as "llama3:latest".
        return ":" not in model and f"{model}:latest" in self.resident

    def is_resident(self, model: str) -> bool | None:
        """Ready to answer: held, and no request is still waiting for the upstream to load it. A request that
        arrives during a load waits for it, so it is cold, as the replay counts it."""
        held = self.holds(model)
        return held and model not in self.warming if held is not None else None

    async def before_forward(self, model: str, body: dict[str, Any], endpoint: str) -> dict[str, Any] | None:
        return None

    def upstream_for(self, model: str) -> str | None:
        return None

    def model_servers(self) -> dict[str, tuple[str, int]] | None:
        return None

    def request_started(self, model: str) -> None:
        if self.holds(model) is False:
            self.warming.add(model)  # the upstream loads it for this request; done once it answers
        self.in_flight[model] = self.in_flight.get(model, 0) + 1

    def upstream_answered(self, model: str) -> None:
        self.warming.discard(model)

    def request_finished(self, model: str, event: RequestEvent) -> None:
        self.warming.discard(model)
        n = self.in_flight.get(model, 0) - 1
        if n > 0:
            self.in_flight[model] = n
        else:
            self.in_flight.pop(model, None)
        if event.status == 200:  # the proxy calls the hooks only for endpoints that load the model
            self.mark_resident(model)
