"""SGLang with its memory saver as a prewarm upstream: one SGLang server per model.

Each server is started with ``--enable-memory-saver`` (SGLang 0.5.23; the
torch_memory_saver package it depends on does the work). Unloading is
``POST /release_memory_occupation``, which frees the weights, the KV cache and
the CUDA graphs while the process stays up; loading is
``POST /resume_memory_occupation``. A server started with
``--enable-weights-cpu-backup`` keeps its weights in CPU RAM while released, so a
resume is a copy back; without it the resumed weights are uninitialised and are
read again with ``POST /update_weights_from_disk`` (a full load from disk).

SGLang's refusals are crashes: a release while a request is running, a resume of
memory not released, a second release, or a request reaching a released server
each kill the server. prewarm never unloads a model with requests in flight,
never forwards to a model it has not resumed, and remembers what it released.
SGLang has no call that says whether a server's memory is released, so that
memory is prewarm's own record, kept beside the database (``<db>.sglang.json``)
so a restarted ``serve`` knows it too. A server restarted behind prewarm's back
comes up holding its memory while the record says released: delete the record's
entry for it (or the file) when you restart an SGLang server by hand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from prewarm.backends.base import Backend, BackendError, HttpClient, ServerPerModel
from prewarm.catalog import Catalog
from prewarm.config import Settings

log = logging.getLogger(__name__)


def record_path(db: str) -> Path:
    """Where the released-servers record of the database at `db` lives."""
    return Path(db).with_suffix(".sglang.json")


class SglangBackend(ServerPerModel):
    kind = "sglang"
    resident_known = True
    loads_on_request = False  # a request to a released server crashes it: prewarm resumes it first
    sets_keep_alive = False
    routes_per_model = True

    def __init__(self, servers: dict[str, str], catalog: Catalog | None = None, record: Path | None = None,
                 timeout_s: float = 600.0):
        if not servers:
            raise BackendError("upstream_kind = sglang needs [sglang.servers] (model -> base URL) in the config")
        super().__init__(servers, "SGLang")
        self.catalog = catalog or Catalog({})
        self.load_options: dict[str, dict[str, Any]] = {}  # an SGLang server's options are fixed at its start
        self.size_source: dict[str, str] = {}
        self.http = HttpClient(timeout_s)
        self.record = record
        self.released: set[str] = self._read_record()
        self._no_weights: set[str] = set()  # resumed without a CPU copy, weights not read again yet: not servable
        self._info: dict[str, dict[str, Any]] = {}

    def _read_record(self) -> set[str]:
        if self.record is None or not self.record.exists():
            return set()
        try:
            urls = set(json.loads(self.record.read_text(encoding="utf-8")).get("released", []))
        except (OSError, ValueError, AttributeError) as exc:
            raise BackendError(f"cannot read the SGLang record {self.record}: {exc}; delete it if no server "
                               "is released") from None
        return {m for m, u in self.servers.items() if u in urls}

    def _write_record(self) -> None:
        if self.record is None:
            return
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"released": sorted(self.servers[m] for m in self.released)}), encoding="utf-8")
        os.replace(tmp, self.record)

    async def _mark(self, model: str, released: bool) -> None:
        (self.released.add if released else self.released.discard)(model)
        await asyncio.to_thread(self._write_record)

    async def server_info(self, model: str) -> dict[str, Any]:
        if model not in self._info:
            data = await self.http.json("GET", f"{self.route_for(model)}/server_info", f"server_info {model}")
            self._info[model] = data if isinstance(data, dict) else {}
        return self._info[model]

    async def check(self) -> list[str]:
        notes = []
        for model, url in self.servers.items():
            try:
                info = await self.server_info(model)
            except BackendError as exc:
                notes.append(f"{exc}; {model} counts as not resident until its server answers")
                continue
            if not info.get("enable_memory_saver"):
                notes.append(f"the SGLang server for {model} ({url}) runs without --enable-memory-saver: releasing "
                             "its memory frees nothing, so prewarm cannot make room by unloading it")
            served = info.get("served_model_name")
            if served and served != model:
                notes.append(f"the SGLang server at {url} serves {served!r}, configured as {model!r}: requests "
                             "naming the configured model may be refused")
        return notes

    async def _alive(self, model: str) -> bool:
        try:
            await self.http.json("GET", f"{self.servers[model]}/health", f"health {model}")
            return True
        except BackendError as exc:
            log.warning("sglang: %s; counting %s as not resident", exc, model)
            return False

    async def list_resident(self) -> dict[str, int]:
        models = [m for m in self.servers if m not in self.released and m not in self._no_weights]
        alive = await asyncio.gather(*(self._alive(m) for m in models))
        return {m: self.catalog.get(m).size_bytes for m, up in zip(models, alive, strict=True) if up}

    async def load(self, model: str, keep_alive: str | None = None, options: dict[str, Any] | None = None) -> None:
        """Resume the server's memory; read the weights again where no CPU copy was kept.

        keep_alive and options have no meaning for SGLang (a server holds its memory
        until released; its options are fixed at start), so they are ignored.
        """
        url = self.route_for(model)
        info = await self.server_info(model)
        if model in self.released:
            await self.http.json("POST", f"{url}/resume_memory_occupation", f"resume_memory_occupation {model}",
                                 json={})
            # Resumed from here on, whatever follows: a second resume would crash the server.
            await self._mark(model, released=False)
            if not info.get("enable_weights_cpu_backup"):
                self._no_weights.add(model)
        if model in self._no_weights:
            path = info.get("model_path") or model
            result = await self.http.json("POST", f"{url}/update_weights_from_disk", f"update_weights_from_disk {model}",
                                          json={"model_path": path})
            if not (isinstance(result, dict) and result.get("success")):
                raise BackendError(f"update_weights_from_disk {model}: {result!r}")
            self._no_weights.discard(model)

    async def unload(self, model: str) -> None:
        url = self.route_for(model)
        if model in self.released:
            return
        await self.http.json("POST", f"{url}/release_memory_occupation", f"release_memory_occupation {model}", json={})
        self._no_weights.discard(model)
        await self._mark(model, released=True)

    async def sizes(self) -> dict[str, int]:
        return {m: self.catalog.get(m).size_bytes for m in self.servers}

    async def reported_vram_total(self) -> int | None:
        return None

    async def keep(self, model: str, keep_alive: str) -> None:
        """No keep-alive timer on this upstream: a server holds its memory until released."""

    async def close(self) -> None:
        await self.http.close()


def from_settings(settings: Settings, catalog: Catalog) -> Backend:
    """This kind's adapter from the settings (backends.registry calls it)."""
    return SglangBackend(settings.sglang_servers, catalog, record_path(settings.db), settings.request_timeout)
