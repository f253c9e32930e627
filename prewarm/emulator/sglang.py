"""One SGLang server with its memory saver (``--enable-memory-saver``), emulated: a stand-in, not SGLang.

Modelled on SGLang 0.5.23 (python/sglang/srt/entrypoints/http_server.py and the
scheduler's weight updater) and its "SGLang for RL" guide, the parts prewarm uses:

* ``POST /release_memory_occupation {"tags": [...]}`` frees the tagged memory
  (``weights``, ``kv_cache``, ``cuda_graph``; no tags: all three) and answers
  200 with a ``null`` body. With ``--enable-weights-cpu-backup`` the weights are
  copied to CPU RAM first (``BACKUP_FRACTION`` x load_seconds).
* ``POST /resume_memory_occupation {"tags": [...]}`` maps the memory back. With the
  CPU backup the weights come back with it; without it they are uninitialised
  until ``POST /update_weights_from_disk {"model_path": ...}`` reads them again
  (load_seconds).
* ``/health``, ``/health_generate`` (200, empty body), ``/model_info``,
  ``/server_info`` (the server's arguments, ``enable_memory_saver`` and
  ``enable_weights_cpu_backup`` among them), ``/v1/models`` and the OpenAI routes.

The refusal rules are SGLang's, and they are harsh: its scheduler asserts that it
is idle before a release, and that a tag being resumed was released, and
torch_memory_saver exits when asked to pause memory already paused. Any of these,
or a request reaching a server whose memory is released, kills the real server.
The stand-in answers that call with 500 and every later one with 503 (``crashed``),
so a test sees the adapter's mistake. SGLang has no call that says whether memory
is released; neither has the stand-in (``/emulator/stats`` is the emulator's own).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from prewarm.emulator.openai_engine import SERVING_KEY, ModelServerEngine, errors_middleware, model_card, openai_routes
from prewarm.emulator.runners import BadRequest, EmulatorError
from prewarm.emulator.web_common import json_response, mark_emulator, read_json

TAGS = ("weights", "kv_cache", "cuda_graph")
BACKUP_FRACTION = 0.1  # copying weights between GPU and pinned CPU memory, as a share of a load from disk
ALLOCATE_FRACTION = 0.01
VERSION = "0.5.23-prewarm-emulator"


class SglangEngine(ModelServerEngine):
    """The memory-saver state of one model's server and what it holds on the emulated GPU."""

    def __init__(self, model: str, size_bytes: int, load_seconds: float, time_scale: float,
                 tokens_per_second: float, cpu_backup: bool = False, memory_saver: bool = True):
        super().__init__(model, size_bytes, load_seconds, time_scale, tokens_per_second)
        self.cpu_backup = cpu_backup
        self.memory_saver = memory_saver
        self.released: set[str] = set()
        self.weights_valid = True
        self.crashed: str | None = None
        self.counters.update({"releases": 0, "resumes": 0, "weight_loads": 0})
        self.peak_vram_used = self.vram_used

    @property
    def vram_used(self) -> int:
        return ((0 if "weights" in self.released else self.weight_bytes)
                + (0 if "kv_cache" in self.released else self.kv_bytes))

    def crash(self, why: str) -> EmulatorError:
        self.crashed = why
        return EmulatorError(f"emulated SGLang crash (the real server exits here): {why}", 500)

    def check_alive(self) -> None:
        if self.crashed is not None:
            raise EmulatorError(f"server is down: it crashed earlier ({self.crashed})", 503)

    def check_serving(self) -> None:
        self.check_alive()
        if self.released:
            self.counters["rejected"] += 1
            raise self.crash(f"a request reached the server while {sorted(self.released)} were released")
        if not self.weights_valid:
            self.counters["rejected"] += 1
            raise EmulatorError("the weights are uninitialised: resumed without --enable-weights-cpu-backup; "
                                "POST /update_weights_from_disk first (real SGLang would answer garbage)", 503)

    async def _pause(self, fraction: float) -> None:
        await asyncio.sleep(fraction * self.load_seconds * self.time_scale)

    async def release(self, tags: list[str]) -> None:
        async with self._op_lock:
            self.check_alive()
            if self.in_flight:
                raise self.crash("release_memory_occupation should be called only when server is idle.")
            if not self.memory_saver:
                return  # without --enable-memory-saver the call succeeds and frees nothing
            again = [t for t in tags if t in self.released and t != "cuda_graph"]
            if again:
                raise self.crash(f"[torch_memory_saver.cpp] Cannot pause allocation that is not active ({again})")
            if "weights" in tags and self.cpu_backup:
                await self._pause(BACKUP_FRACTION)
            self.released.update(tags)
            self.counters["releases"] += 1

    async def resume(self, tags: list[str]) -> None:
        async with self._op_lock:
            self.check_alive()
            if not self.memory_saver:
                return
            missing = [t for t in tags if t not in self.released]
            if missing:
                raise self.crash(f"KeyError: {missing[0]!r} (resume of memory that was not released)")
            if "weights" in tags:
                await self._pause(BACKUP_FRACTION if self.cpu_backup else ALLOCATE_FRACTION)
                self.weights_valid = self.cpu_backup
            if "kv_cache" in tags:
                await self._pause(ALLOCATE_FRACTION)
            self.released.difference_update(tags)
            self.peak_vram_used = max(self.peak_vram_used, self.vram_used)
            self.counters["resumes"] += 1

    async def update_weights_from_disk(self, model_path: str) -> dict[str, Any]:
        async with self._op_lock:
            self.check_alive()
            if model_path != self.model:
                return {"success": False, "message": f"Failed to get weights iterator: {model_path} not found.",
                        "num_paused_requests": 0}
            if "weights" in self.released:
                raise self.crash("update_weights_from_disk into released weights memory")
            await self._pause(1.0)
            self.weights_valid = True
            self.counters["weight_loads"] += 1
            return {"success": True, "message": "Succeeded to update model weights.", "num_paused_requests": 0}

    def server_info(self) -> dict[str, Any]:
        return {
            "model_path": self.model,
            "served_model_name": self.model,
            "enable_memory_saver": self.memory_saver,
            "enable_weights_cpu_backup": self.cpu_backup,
            "version": VERSION,
            "internal_states": [{"memory_usage": {"weight": self.weight_bytes / 2**30,
                                                  "kvcache": self.kv_bytes / 2**30}}],
        }

    def stats(self) -> dict[str, Any]:
        return {
            "emulator": True, "backend": "sglang", "model": self.model, "size_bytes": self.size_bytes,
            "vram_used": self.vram_used, "peak_vram_used": self.peak_vram_used,
            "released": sorted(self.released), "weights_valid": self.weights_valid, "crashed": self.crashed,
            "in_flight": self.in_flight, **self.counters,
        }


ENGINE_KEY: web.AppKey[SglangEngine] = web.AppKey("prewarm_sglang_engine", SglangEngine)


def _engine(request: web.Request) -> SglangEngine:
    return request.app[ENGINE_KEY]


async def _tags(request: web.Request) -> list[str]:
    body = await read_json(request) if request.can_read_body else {}
    tags = body.get("tags")
    if tags is None or tags == []:
        return list(TAGS)
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadRequest(f"tags must be a list of strings, got {tags!r}")
    return tags


async def release(request: web.Request) -> web.Response:
    await _engine(request).release(await _tags(request))
    return json_response(None)


async def resume(request: web.Request) -> web.Response:
    await _engine(request).resume(await _tags(request))
    return json_response(None)


async def update_weights_from_disk(request: web.Request) -> web.Response:
    body = await read_json(request)
    path = body.get("model_path")
    if not isinstance(path, str) or not path:
        raise BadRequest("model_path must be a non-empty string")
    result = await _engine(request).update_weights_from_disk(path)
    return json_response(result, status=200 if result["success"] else 400)


async def health(request: web.Request) -> web.Response:
    _engine(request).check_alive()
    return web.Response(status=200)


async def model_info(request: web.Request) -> web.Response:
    e = _engine(request)
    e.check_alive()
    return json_response({"model_path": e.model, "served_model_name": e.model, "tokenizer_path": e.model,
                          "is_generation": True, "weight_version": "default", "model_type": "llama",
                          "architectures": ["LlamaForCausalLM"]})


async def server_info(request: web.Request) -> web.Response:
    e = _engine(request)
    e.check_alive()
    return json_response(e.server_info())


async def models(request: web.Request) -> web.Response:
    e = _engine(request)
    e.check_alive()
    return json_response({"object": "list", "data": [model_card(e, "sglang")]})


async def stats(request: web.Request) -> web.Response:
    return json_response(_engine(request).stats())


def make_sglang_app(model: str, size_bytes: int, load_seconds: float, time_scale: float = 1.0,
                    tokens_per_second: float = 200.0, cpu_backup: bool = False,
                    memory_saver: bool = True) -> web.Application:
    """An SGLang server for ``model`` that starts with its memory held (as SGLang does)."""
    app = web.Application(middlewares=[errors_middleware])
    app[ENGINE_KEY] = app[SERVING_KEY] = SglangEngine(model, size_bytes, load_seconds, time_scale,
                                                      tokens_per_second, cpu_backup, memory_saver)
    app.on_response_prepare.append(mark_emulator)
    app.add_routes([
        web.get("/release_memory_occupation", release),
        web.post("/release_memory_occupation", release),
        web.get("/resume_memory_occupation", resume),
        web.post("/resume_memory_occupation", resume),
        web.post("/update_weights_from_disk", update_weights_from_disk),
        web.get("/health", health),
        web.get("/health_generate", health),
        web.get("/model_info", model_info),
        web.get("/get_model_info", model_info),
        web.get("/server_info", server_info),
        web.get("/get_server_info", server_info),
        web.get("/v1/models", models),
        *openai_routes(),
        web.get("/emulator/stats", stats),
    ])
    return app
