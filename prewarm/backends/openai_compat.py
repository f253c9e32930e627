"""A generic OpenAI-compatible upstream: llama-cpp-python, LM Studio, vLLM without sleep mode, any llama-server.

What it can do honestly: list the models the server offers (/v1/models) and load
one the only way these servers allow, by sending it a one-token completion (a
multi-model server swaps the model in on request). What it cannot do: say which
models are in GPU memory (the OpenAI API has no such call), so ``resident_known``
is False and cold flags for it are unknown; nor unload a model (no such call
either), so ``unload`` raises Unsupported and the prewarmer only records that.
"""

from __future__ import annotations

from typing import Any

from prewarm.backends.base import Backend, BackendError, HttpClient, Unsupported
from prewarm.catalog import Catalog
from prewarm.config import Settings


class OpenAICompatBackend:
    kind = "openai"
    resident_known = False
    loads_on_request = True
    sets_keep_alive = False
    routes_per_model = False

    def __init__(self, base_url: str, catalog: Catalog | None = None, timeout_s: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.catalog = catalog or Catalog({})
        self.http = HttpClient(timeout_s)
        self.load_options: dict[str, dict[str, Any]] = {}
        self.size_source: dict[str, str] = {}

    def canonical(self, model: str) -> str:
        return model

    def route_for(self, model: str) -> str:
        return self.base_url

    async def models(self) -> list[str]:
        data = await self.http.json("GET", f"{self.base_url}/v1/models", "list models")
        return [m["id"] for m in (data or {}).get("data", []) if isinstance(m, dict) and m.get("id")]

    async def list_resident(self) -> dict[str, int]:
        """Always empty: the OpenAI API cannot tell what is in GPU memory (see the module docstring)."""
        return {}

    async def load(self, model: str, keep_alive: str | None = None, options: dict[str, Any] | None = None) -> None:
        """A one-token completion. The name is checked first: llama-cpp-python answers an unknown model with its
        default one (HTTP 200), so a misspelt load would silently swap the wrong model in."""
        offered = await self.models()
        if model not in offered:
            raise BackendError(f"load {model}: the server does not offer it (it offers {', '.join(offered) or 'nothing'})")
        await self.http.json(
            "POST", f"{self.base_url}/v1/completions", f"load {model}",
            json={"model": model, "prompt": " ", "max_tokens": 1, "temperature": 0},
        )

    async def unload(self, model: str) -> None:
        raise Unsupported(f"unload {model}: an OpenAI-compatible server has no unload call")

    async def sizes(self) -> dict[str, int]:
        return {m: self.catalog.get(m).size_bytes for m in await self.models()}

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
    return OpenAICompatBackend(settings.upstream, catalog, settings.request_timeout)
