"""What the prewarmer needs from an upstream, whatever its kind.

Backends only carry out decisions (load, unload) and report state (resident set,
sizes); what to load is the planner's job. Each adapter speaks its upstream's own
API so the upstream stays the authority on what is in its memory.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import aiohttp

from prewarm.errors import BackendError as BackendError
from prewarm.errors import Unsupported as Unsupported


class Backend(Protocol):
    kind: str
    base_url: str
    resident_known: bool  # False when the upstream cannot say what is in GPU memory (OpenAI-compatible servers)
    loads_on_request: bool  # False when a request for an unloaded model fails instead (a sleeping vLLM server)
    sets_keep_alive: bool  # the request body's keep_alive decides how long the upstream keeps a model (Ollama)
    routes_per_model: bool  # each model has its own server (route_for differs per model: vLLM, SGLang)
    load_options: dict[str, dict[str, Any]]  # model -> the runner options loads should use (traffic's most common)
    size_source: dict[str, str]  # model -> where its size came from, for model_catalog.source

    def canonical(self, model: str) -> str:
        """The name the upstream reports for `model` (Ollama: "mistral" is "mistral:latest")."""

    async def list_resident(self) -> dict[str, int]:
        """Models in the upstream's GPU memory now, with the bytes each holds."""

    async def load(self, model: str, keep_alive: str | None = None, options: dict[str, Any] | None = None) -> None:
        """Bring `model` into memory and return once it is there."""

    async def unload(self, model: str) -> None:
        """Release `model`'s memory and return once it is released."""

    async def sizes(self) -> dict[str, int]:
        """Best known VRAM size of every model the upstream can serve (resident or not)."""

    async def reported_vram_total(self) -> int | None:
        """The upstream's own figure for its VRAM, when it reports one (the budget fallback without NVML)."""

    def route_for(self, model: str) -> str:
        """Base URL that serves `model` (differs per model only where routes_per_model)."""

    async def check(self) -> list[str]:
        """What the operator should know about how the upstream was started (logged once at start; [] for nothing)."""

    async def keep(self, model: str, keep_alive: str) -> None:
        """Renew how long a resident model stays (Ollama's keep_alive); a no-op where the upstream has no timer."""

    async def close(self) -> None: ...


class ServerPerModel:
    """The routing of upstreams that run one server per model (vLLM, SGLang): model -> base URL."""

    def __init__(self, servers: dict[str, str], what: str) -> None:
        self.servers = {m: u.rstrip("/") for m, u in servers.items()}
        self.base_url = next(iter(self.servers.values()))
        self._what = what

    def canonical(self, model: str) -> str:
        return model

    def route_for(self, model: str) -> str:
        try:
            return self.servers[model]
        except KeyError:
            raise BackendError(f"no {self._what} server configured for model {model!r}; "
                               f"known: {sorted(self.servers)}") from None


class HttpClient:
    """One aiohttp session per backend, opened on first use (so constructing a backend does no I/O)."""

    def __init__(self, timeout_s: float):
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def json(self, method: str, url: str, what: str, **kw: Any) -> Any:
        """Send a request and return its JSON body (None for an empty one); BackendError otherwise."""
        try:
            async with self.session.request(method, url, **kw) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise BackendError(f"{what}: {method} {url} -> HTTP {resp.status}: {body[:300].decode(errors='replace')}")
                if not body.strip():
                    return None
                try:
                    return json.loads(body)
                except ValueError:
                    raise BackendError(f"{what}: {method} {url} did not answer JSON: {body[:200]!r}") from None
        except aiohttp.ClientError as exc:
            raise BackendError(f"{what}: {method} {url} failed: {exc}") from exc
        except TimeoutError as exc:
            raise BackendError(f"{what}: {method} {url} timed out") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
