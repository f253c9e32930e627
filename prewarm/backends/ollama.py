"""Ollama (and the built-in emulator, which speaks the same API) as a prewarm upstream.

Ollama has no explicit load/unload endpoints; its documented idiom is a generate
request without a prompt: it loads the model and keeps it for ``keep_alive``, and
``keep_alive: 0`` unloads it. A runner loaded with different runner options
(num_ctx above all) than the next request asks for is reloaded, so a prewarm load
uses the options real traffic uses for that model, or the prewarm would be wasted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prewarm.backends.base import Backend, BackendError, HttpClient
from prewarm.backends.sizing import DEFAULT_NUM_CTX, estimate_size
from prewarm.catalog import Catalog
from prewarm.config import Settings

log = logging.getLogger(__name__)

# Options that decide which runner Ollama starts (llm.Options.Runner): a change forces a reload.
RUNNER_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")


def canonical_name(model: str) -> str:
    """Ollama's rule: a name without a tag means ``:latest`` (so "mistral" and "mistral:latest" are one model)."""
    model = model.strip()
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def runner_options(options: Any) -> dict[str, Any]:
    """The runner-relevant part of a request's ``options`` (the rest, e.g. temperature, does not reload)."""
    if not isinstance(options, dict):
        return {}
    return {k: options[k] for k in RUNNER_OPTIONS if k in options}


class OllamaBackend:
    kind = "ollama"
    resident_known = True
    loads_on_request = True
    sets_keep_alive = True
    routes_per_model = False

    def __init__(self, base_url: str, catalog: Catalog | None = None, timeout_s: float = 600.0,
                 unload_wait_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.catalog = catalog or Catalog({})
        self.http = HttpClient(timeout_s)
        self.unload_wait_s = unload_wait_s
        self.load_options: dict[str, dict[str, Any]] = {}  # model -> runner options real traffic uses most
        self.size_source: dict[str, str] = {}
        self.resident_ctx: dict[str, int] = {}  # model -> num_ctx its runner was loaded with (/api/ps context_length)
        self._show_cache: dict[tuple[str, str], tuple[dict[str, Any], int | None]] = {}

    def canonical(self, model: str) -> str:
        return canonical_name(model)

    def route_for(self, model: str) -> str:
        return self.base_url

    async def list_resident(self) -> dict[str, int]:
        data = await self.http.json("GET", f"{self.base_url}/api/ps", "list resident models")
        out: dict[str, int] = {}
        for m in (data or {}).get("models", []):
            name = m.get("name") or m.get("model")
            if name:
                out[canonical_name(name)] = int(m.get("size_vram", m.get("size", 0)) or 0)
                if m.get("context_length"):
                    self.resident_ctx[canonical_name(name)] = int(m["context_length"])
        return out

    async def load(self, model: str, keep_alive: str | None = None, options: dict[str, Any] | None = None) -> None:
        model = canonical_name(model)
        body: dict[str, Any] = {"model": model, "stream": False}
        opts = options if options is not None else self.load_options.get(model)
        if opts:
            body["options"] = opts
        if keep_alive is not None:
            body["keep_alive"] = keep_alive_value(keep_alive)
        data = await self.http.json("POST", f"{self.base_url}/api/generate", f"load {model}", json=body)
        if not isinstance(data, dict) or not data.get("done"):
            raise BackendError(f"load {model}: Ollama answered {data!r} instead of a finished load")

    async def check(self) -> list[str]:
        return []

    async def keep(self, model: str, keep_alive: str) -> None:
        """Renew a resident model's keep_alive with the context its runner has, so Ollama does not reload it."""
        model = canonical_name(model)
        opts = dict(self.load_options.get(model, {}))
        if model in self.resident_ctx:
            opts["num_ctx"] = self.resident_ctx[model]
        await self.load(model, keep_alive=keep_alive, options=opts)

    async def unload(self, model: str) -> None:
        """keep_alive 0, then wait until /api/ps no longer lists the model: Ollama frees memory asynchronously."""
        model = canonical_name(model)
        await self.http.json(
            "POST", f"{self.base_url}/api/generate", f"unload {model}",
            json={"model": model, "keep_alive": 0, "stream": False},
        )
        deadline = time.monotonic() + self.unload_wait_s
        while model in await self.list_resident():
            if time.monotonic() > deadline:
                raise BackendError(f"unload {model}: still listed by /api/ps after {self.unload_wait_s:.0f}s")
            await asyncio.sleep(0.05)

    async def sizes(self) -> dict[str, int]:
        """/api/ps size_vram for resident models, else file size + KV cache at the context traffic uses."""
        resident = await self.list_resident()
        tags = await self.http.json("GET", f"{self.base_url}/api/tags", "list models")
        out: dict[str, int] = {}
        for m in (tags or {}).get("models", []):
            name = canonical_name(m.get("name") or m.get("model") or "")
            if name in resident:
                continue
            file_bytes = int(m.get("size") or 0)
            info, ctx_default = await self._show(name, m.get("digest") or "")
            num_ctx = int(self.load_options.get(name, {}).get("num_ctx") or ctx_default or DEFAULT_NUM_CTX)
            out[name] = estimate_size(file_bytes, info, num_ctx)
            self.size_source[name] = f"estimate: file + KV cache at num_ctx={num_ctx}"
        for name, size in resident.items():
            out[name] = size
            self.size_source[name] = "upstream /api/ps size_vram"
        return out

    async def _show(self, model: str, digest: str) -> tuple[dict[str, Any], int | None]:
        key = (model, digest)
        if key not in self._show_cache:
            try:
                data = await self.http.json("POST", f"{self.base_url}/api/show", f"show {model}", json={"model": model})
            except BackendError as exc:
                log.warning("sizes: %s; sizing %s from its file alone", exc, model)
                data = {}
            self._show_cache[key] = ((data or {}).get("model_info") or {}, _num_ctx_parameter(data or {}))
        return self._show_cache[key]

    async def reported_vram_total(self) -> int | None:
        """The emulator's VRAM when it is one; else what Ollama holds now (a floor it has proven fits)."""
        try:
            stats = await self.http.json("GET", f"{self.base_url}/emulator/stats", "emulator stats")
            if isinstance(stats, dict) and stats.get("emulator"):
                return int(stats["vram_bytes"])
        except BackendError:
            pass
        total = sum((await self.list_resident()).values())
        return total or None

    async def close(self) -> None:
        await self.http.close()


def keep_alive_value(keep_alive: str) -> str | int | float:
    """Ollama reads a bare number as seconds and a string as a Go duration; "-1" must go as a number."""
    try:
        return float(keep_alive) if "." in keep_alive else int(keep_alive)
    except ValueError:
        return keep_alive


def _num_ctx_parameter(show: dict[str, Any]) -> int | None:
    """num_ctx set in the Modelfile (the /api/show "parameters" text), which beats Ollama's default."""
    for line in str(show.get("parameters") or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "num_ctx" and parts[1].isdigit():
            return int(parts[1])
    return None


def from_settings(settings: Settings, catalog: Catalog) -> Backend:
    """This kind's adapter from the settings (backends.registry calls it)."""
    return OllamaBackend(settings.upstream, catalog, settings.request_timeout)
