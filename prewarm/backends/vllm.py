"""vLLM with sleep mode as a prewarm upstream: one vLLM server per model.

vLLM serves one model per process, so "resident" means "that server is awake".
Sleep level 1 moves weights to CPU RAM (fast wake), level 2 drops them (the
weights must be reloaded from disk after waking). The endpoints used
(/sleep, /wake_up, /is_sleeping, /collective_rpc) exist only when the server runs
with ``--enable-sleep-mode`` and ``VLLM_SERVER_DEV_MODE=1``. vLLM does not report
memory per model, so sizes come from the catalog (or its default rule).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prewarm.backends.base import Backend, BackendError, HttpClient, ServerPerModel
from prewarm.catalog import Catalog
from prewarm.config import Settings

log = logging.getLogger(__name__)


class VllmBackend(ServerPerModel):
    kind = "vllm"
    resident_known = True
    loads_on_request = False
    sets_keep_alive = False
    routes_per_model = True

    def __init__(self, servers: dict[str, str], catalog: Catalog | None = None, sleep_level: int = 1,
                 timeout_s: float = 600.0):
        if not servers:
            raise BackendError("upstream_kind = vllm needs [vllm.servers] (model -> base URL) in the config")
        if sleep_level not in (1, 2):
            raise BackendError(f"vllm_sleep_level must be 1 or 2, got {sleep_level}")
        super().__init__(servers, "vLLM")
        self.catalog = catalog or Catalog({})
        self.load_options: dict[str, dict[str, Any]] = {}  # a vLLM server's options are fixed at its start
        self.size_source: dict[str, str] = {}
        self.sleep_level = sleep_level
        self.http = HttpClient(timeout_s)
        # The level each server was put to sleep at by us; a server found asleep is assumed at the configured level.
        self._slept_level: dict[str, int] = {}

    async def _is_sleeping(self, model: str) -> bool | None:
        try:
            data = await self.http.json("GET", f"{self.servers[model]}/is_sleeping", f"is_sleeping {model}")
        except BackendError as exc:
            log.warning("vllm: %s; counting %s as not resident", exc, model)
            return None
        return bool((data or {}).get("is_sleeping"))

    async def list_resident(self) -> dict[str, int]:
        models = list(self.servers)
        states = await asyncio.gather(*(self._is_sleeping(m) for m in models))
        return {m: self.catalog.get(m).size_bytes for m, asleep in zip(models, states, strict=False) if asleep is False}

    async def load(self, model: str, keep_alive: str | None = None, options: dict[str, Any] | None = None) -> None:
        """Wake the server; after a level-2 sleep its weights are gone and must be reloaded too.

        keep_alive and options have no meaning for vLLM (a server stays awake until
        told to sleep, and its runner options are fixed at start), so they are ignored.
        """
        url = self.route_for(model)
        if await self._is_sleeping(model) is False:
            return
        await self.http.json("POST", f"{url}/wake_up", f"wake_up {model}")
        if self._slept_level.get(model, self.sleep_level) >= 2:
            await self.http.json("POST", f"{url}/collective_rpc", f"reload_weights {model}",
                                 json={"method": "reload_weights"})
        self._slept_level.pop(model, None)

    async def unload(self, model: str) -> None:
        url = self.route_for(model)
        await self.http.json("POST", f"{url}/sleep", f"sleep {model}", params={"level": str(self.sleep_level)})
        self._slept_level[model] = self.sleep_level

    async def sizes(self) -> dict[str, int]:
        return {m: self.catalog.get(m).size_bytes for m in self.servers}

    async def reported_vram_total(self) -> int | None:
        return None

    async def close(self) -> None:
        await self.http.close()

    async def check(self) -> list[str]:
        return []

    async def keep(self, model: str, keep_alive: str) -> None:
        """No keep-alive timer on this upstream: a resident model stays until unloaded."""


def from_settings(settings: Settings, catalog: Catalog) -> Backend:
    """This kind's adapter from the settings (backends.registry calls it)."""
    return VllmBackend(settings.vllm_servers, catalog, settings.vllm_sleep_level, settings.request_timeout)
