"""What the prewarmer knows of each model: its size, its load time, and whether the upstream serves it.

A person's word comes first: the catalog CSV's row wins over anything measured.
Then what the upstream says (the bytes it reports resident, its model list) and
what the log measured (median load times); the catalog's default rule last. A
name nobody knows is not served: a request for a misspelt model must never evict
real ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prewarm.backends.base import Backend
from prewarm.backends.sizing import catalog_rows, load_ms_p50
from prewarm.catalog import Catalog
from prewarm.errors import BackendError
from prewarm.prewarmer.residency import ResidencyTracker
from prewarm.store import queries

log = logging.getLogger(__name__)

# An unknown model name makes the prewarmer ask the upstream for its models again, at most this often: a
# flood of made-up names must not become a flood of /api/tags calls.
SIZES_REFRESH_MIN_S = 5.0


class ModelFacts:
    def __init__(self, backend: Backend, catalog: Catalog, tracker: ResidencyTracker) -> None:
        self.backend = backend
        self.catalog = catalog
        self.tracker = tracker
        self.sizes: dict[str, int] = {}  # what the upstream serves, with its bytes
        self.load_ms: dict[str, float] = {}  # median load time per model, from the log
        self._sizes_at = 0.0  # monotonic time of the last sizes() refresh for an unknown name

    def size_of(self, model: str) -> int:
        if model in self.catalog:
            return self.catalog.get(model).size_bytes
        if self.tracker.resident.get(model):
            return self.tracker.resident[model]
        return self.sizes.get(model) or self.catalog.get(model).size_bytes

    def load_seconds_of(self, model: str) -> float:
        if model in self.catalog:
            return self.catalog.get(model).load_seconds
        if model in self.load_ms:
            return self.load_ms[model] / 1000.0
        return self.catalog.get(model).load_seconds

    def known_now(self, model: str) -> bool:
        """Served, catalogued or resident, as far as is known without asking the upstream."""
        return model in self.sizes or model in self.catalog or model in self.tracker.resident

    async def served(self, model: str) -> bool:
        """Whether the upstream serves `model`; a model pulled since the last refresh is found by refreshing once
        (at most every SIZES_REFRESH_MIN_S)."""
        if self.known_now(model):
            return True
        now = time.monotonic()
        if now - self._sizes_at < SIZES_REFRESH_MIN_S:
            return False
        self._sizes_at = now
        try:
            self.sizes = await self.backend.sizes()
        except BackendError as exc:
            log.warning("sizes: %s", exc)
        return model in self.sizes

    async def refresh(self, store: Any | None) -> None:
        """Sizes from the upstream, load times from the log; both into model_catalog (the catalog CSV wins)."""
        try:
            self.sizes = await self.backend.sizes()
        except BackendError as exc:
            log.warning("sizes: %s; using the catalog and its default rule", exc)
        if store is not None:
            try:
                self.load_ms = load_ms_p50(await asyncio.to_thread(store.read_df, queries.LOAD_MS))
            except Exception as exc:  # the store may be unavailable; load times then come from the catalog
                log.warning("load times: cannot read the log (%s); using the catalog", exc)
        rows = catalog_rows(self.sizes, self.backend.size_source, self.load_ms, self.catalog)
        if store is not None and rows:
            store.put_rows("model_catalog", rows)
