"""llama.cpp's `llama-server` in router mode as a prewarm upstream.

Started with no model (``llama-server --models-dir DIR --models-max 0``), the
router serves every GGUF in DIR, each in a child process it spawns on demand, and
says which are running: ``GET /models`` lists each model with a status and the
command line its child runs with
(``unloaded``, ``loading``, ``loaded``, ``sleeping``; a failed start is
``unloaded`` with ``failed`` and the child's ``exit_code``). ``POST /models/load``
and ``POST /models/unload`` answer at once and the child starts or stops
afterwards, so both are followed by polling ``/models`` until the status settles.

The router's own eviction (``--models-max N``, default 4) counts models, not
bytes, and knows nothing of demand; prewarm makes room under its byte budget
before it forwards a request, so with ``--models-max 0`` the router never evicts
on its own. ``check`` reads the router's ``/props`` and warns when it would.

Sizes: the router does not report memory, so a model's size is its GGUF file plus
the KV cache at the context the child runs with (its ``-c``/``--ctx-size``
argument, else the context the model was trained with, llama.cpp's default),
read from the file's own header with llama.cpp's `gguf` reader. That needs the
files on this machine (the usual set-up: prewarm beside the router); a file it
cannot read falls back to the catalog.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from prewarm.backends.base import Backend, BackendError, HttpClient
from prewarm.backends.sizing import estimate_size
from prewarm.catalog import Catalog
from prewarm.config import Settings

log = logging.getLogger(__name__)

RESIDENT = ("loaded", "loading")  # a loading child already holds (part of) its memory
POLL_S = 0.05


def gguf_metadata(path: str) -> dict[str, Any]:
    """The scalar key-value metadata of a GGUF file (general.architecture, llama.block_count, ...)."""
    from gguf import GGUFReader  # llama.cpp's own reader; imported only by this kind

    reader = GGUFReader(path, "r")
    out: dict[str, Any] = {}
    for name, fld in reader.fields.items():
        if name.startswith("tokenizer.") or len(fld.types) != 1:
            continue  # arrays (the vocabulary) are not needed for sizing
        try:
            out[name] = fld.contents()
        except (ValueError, IndexError):
            continue
    return out


def arg_value(args: object, *names: str) -> str | None:
    """The value of the first of `names` in a child's command line (``--ctx-size 256`` or ``--ctx-size=256``)."""
    if not isinstance(args, list):
        return None
    for i, a in enumerate(args):
        if a in names and i + 1 < len(args):
            return str(args[i + 1])
        for n in names:
            if isinstance(a, str) and a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def ctx_from_args(args: object) -> int | None:
    """The context a child runs with (None when unset or 0: the context the model was trained with)."""
    value = arg_value(args, "-c", "--ctx-size")
    try:
        return int(value) or None if value is not None else None
    except ValueError:
        return None


class LlamaCppBackend:
    kind = "llamacpp"
    resident_known = True
    sets_keep_alive = False
    routes_per_model = False

    def __init__(self, base_url: str, catalog: Catalog | None = None, timeout_s: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.catalog = catalog or Catalog({})
        self.http = HttpClient(timeout_s)
        self.timeout_s = timeout_s
        self.load_options: dict[str, dict[str, Any]] = {}  # a child's options are the router's, fixed at its start
        self.size_source: dict[str, str] = {}
        self.loads_on_request = True  # the router autoloads unless started with --no-models-autoload (see check)
        self._aliases: dict[str, str] = {}
        self._meta: dict[str, tuple[float, dict[str, Any]]] = {}  # path -> (mtime, GGUF metadata)

    def canonical(self, model: str) -> str:
        return self._aliases.get(model, model)

    def route_for(self, model: str) -> str:
        return self.base_url

    async def models(self) -> list[dict[str, Any]]:
        """The router's model list; learns each model's aliases on the way."""
        data = await self.http.json("GET", f"{self.base_url}/models", "list models")
        entries = [m for m in (data or {}).get("data", []) if isinstance(m, dict) and m.get("id")]
        for m in entries:
            for alias in m.get("aliases") or []:
                if isinstance(alias, str) and alias != m["id"]:
                    self._aliases[alias] = m["id"]
        return entries

    @staticmethod
    def _status(entry: Mapping[str, Any]) -> Mapping[str, Any]:
        status = entry.get("status")
        return status if isinstance(status, Mapping) else {"value": str(status or "unknown")}

    async def check(self) -> list[str]:
        """What the operator must know about how the router was started."""
        props = await self.http.json("GET", f"{self.base_url}/props", "router props") or {}
        if props.get("role") != "router":
            return [f"{self.base_url} is a llama-server with one model, not a router: start it with --models-dir "
                    "and no model for upstream_kind = llamacpp"]
        notes = []
        cap = props.get("max_instances")
        if isinstance(cap, int) and cap > 0:
            notes.append(f"llama-server runs with --models-max {cap}: past {cap} loaded models it unloads its least "
                         "recently used one on its own, whatever prewarm's budget says; start it with --models-max 0 "
                         "so that only prewarm evicts")
        if props.get("models_autoload") is False:
            self.loads_on_request = False
            notes.append("llama-server runs with --no-models-autoload: prewarm loads each model before it forwards a "
                         "request for it")
        return notes

    async def list_resident(self) -> dict[str, int]:
        entries = await self.models()
        return await self._sizes_of([m for m in entries if self._status(m).get("value") in RESIDENT])

    async def sizes(self) -> dict[str, int]:
        return await self._sizes_of(await self.models())

    async def _sizes_of(self, entries: list[dict[str, Any]]) -> dict[str, int]:
        """Sizes read from the GGUF files, in a worker thread: a first read parses a file's header, and the
        residency tracker asks every ps_refresh seconds from the event loop."""
        return await asyncio.to_thread(lambda: {str(m["id"]): self._size(m) for m in entries})

    def _size(self, entry: Mapping[str, Any]) -> int:
        name = str(entry["id"])
        if name in self.catalog:
            return self.catalog.get(name).size_bytes
        args = self._status(entry).get("args")
        path = entry.get("path") or arg_value(args, "-m", "--model")  # the router lists it in the child's args
        ctx = ctx_from_args(args)
        if isinstance(path, str) and os.path.isfile(path):
            try:
                meta = self._metadata(path)
                arch = meta.get("general.architecture")
                num_ctx = ctx or int(meta.get(f"{arch}.context_length") or 0) or 4096
                self.size_source[name] = f"estimate: GGUF file + KV cache at ctx {num_ctx}"
                return estimate_size(os.path.getsize(path), meta, num_ctx)
            except Exception as exc:  # a file gguf cannot read: the catalog's word instead
                log.warning("llamacpp: cannot read %s (%s); sizing %s from the catalog", path, exc, name)
        self.size_source[name] = "catalog default rule (GGUF file not readable here)"
        return self.catalog.get(name).size_bytes

    def _metadata(self, path: str) -> dict[str, Any]:
        mtime = os.path.getmtime(path)
        cached = self._meta.get(path)
        if cached is None or cached[0] != mtime:
            cached = (mtime, gguf_metadata(path))
            self._meta[path] = cached
        return cached[1]

    async def _entry(self, model: str) -> Mapping[str, Any]:
        for m in await self.models():
            if m["id"] == model:
                return m
        raise BackendError(f"{model}: the router does not serve it (GET {self.base_url}/models)")

    async def _settle(self, model: str, want: str, what: str) -> None:
        """Poll /models until `model`'s status is `want`; a failed child is a BackendError with its exit code."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            status = self._status(await self._entry(model))
            value = status.get("value")
            if value == want:
                return
            if want == "loaded" and value == "unloaded" and status.get("failed"):
                raise BackendError(f"{what}: llama-server's child for {model} exited with code "
                                   f"{status.get('exit_code')} while loading (see the router's log)")
            if time.monotonic() > deadline:
                raise BackendError(f"{what}: {model} still {value!r} after {self.timeout_s:.0f} s")
            await asyncio.sleep(POLL_S)

    async def load(self, model: str, keep_alive: str | None = None, options: dict[str, Any] | None = None) -> None:
        """Start the model's child and return once it is loaded.

        keep_alive and options have no meaning here: a child stays until unloaded, and
        its options are the router's (or its preset's), fixed when the router starts.
        """
        value = self._status(await self._entry(model)).get("value")
        if value not in RESIDENT and value != "sleeping":
            await self.http.json("POST", f"{self.base_url}/models/load", f"load {model}", json={"model": model})
        elif value == "sleeping":  # a sleeping child wakes on its next request; ask it something
            await self.http.json("GET", f"{self.base_url}/props", f"wake {model}", params={"model": model})
        await self._settle(model, "loaded", f"load {model}")

    async def unload(self, model: str) -> None:
        value = self._status(await self._entry(model)).get("value")
        if value == "unloaded":
            return
        await self.http.json("POST", f"{self.base_url}/models/unload", f"unload {model}", json={"model": model})
        await self._settle(model, "unloaded", f"unload {model}")

    async def reported_vram_total(self) -> int | None:
        return None

    async def keep(self, model: str, keep_alive: str) -> None:
        """No keep-alive timer on this upstream: a child stays until unloaded."""

    async def close(self) -> None:
        await self.http.close()


def from_settings(settings: Settings, catalog: Catalog) -> Backend:
    """This kind's adapter from the settings (backends.registry calls it)."""
    return LlamaCppBackend(settings.upstream, catalog, settings.request_timeout)
