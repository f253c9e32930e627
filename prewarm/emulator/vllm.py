"""One vLLM OpenAI server with sleep mode (``vllm serve --enable-sleep-mode``, dev endpoints on), emulated.

Memory is modelled as vLLM tags it: ``weights`` and ``kv_cache``
(``KV_CACHE_FRACTION`` of the model's size is the KV cache pool).

* ``POST /sleep?level=1`` offloads the weights to CPU RAM and drops the KV cache;
  ``POST /wake_up`` copies them back: ``WAKE_FRACTION`` x load_seconds.
* ``POST /sleep?level=2`` discards the weights too. ``POST /wake_up`` only
  re-allocates the memory; the weights must then be reloaded with
  ``POST /collective_rpc {"method": "reload_weights"}``, which takes load_seconds.
* ``POST /wake_up?tags=weights`` / ``?tags=kv_cache`` wake one pool at a time.
* ``GET /is_sleeping`` is true while any pool sleeps.

Requests while the engine sleeps get 503 telling the caller to wake it, the
behaviour vLLM adopted for issue #15483 (older vLLM crashed instead). After a
level-2 wake without reload_weights, real vLLM would answer with garbage from
uninitialised weights; the emulator answers 503 so a wrong adapter sequence is
caught. ``/sleep`` lets requests already running finish (new ones get 503)
before it frees memory. Sleep itself is instant. The CUDA context vLLM keeps
while asleep is not modelled: a sleeping server holds 0 bytes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from prewarm.emulator.openai_engine import (
    SERVING_KEY,
    ModelServerEngine,
    errors_middleware,
    model_card,
    openai_routes,
)
from prewarm.emulator.runners import BadRequest, EmulatorError
from prewarm.emulator.web_common import json_response, mark_emulator, read_json

WAKE_FRACTION = 0.1
ALLOCATE_FRACTION = 0.01
VERSION = "0.11.0-prewarm-emulator"

AWAKE, OFFLOADED, DISCARDED, EMPTY = "awake", "offloaded", "discarded", "empty"


class VllmEngine(ModelServerEngine):
    """The sleep-mode state of one model and the memory it holds on the emulated GPU."""

    def __init__(self, model: str, size_bytes: int, load_seconds: float, time_scale: float, tokens_per_second: float):
        super().__init__(model, size_bytes, load_seconds, time_scale, tokens_per_second)
        self.weights = AWAKE
        self.kv_cache = AWAKE
        self.sleep_level = 0
        self.draining = False
        self.counters.update({"sleeps": 0, "wakes": 0, "weight_reloads": 0})
        self.peak_vram_used = self.vram_used

    @property
    def is_sleeping(self) -> bool:
        return self.weights in (OFFLOADED, DISCARDED) or self.kv_cache != AWAKE

    @property
    def vram_used(self) -> int:
        held = self.weight_bytes if self.weights in (AWAKE, EMPTY) else 0
        return held + (self.kv_bytes if self.kv_cache == AWAKE else 0)

    def _track_peak(self) -> None:
        self.peak_vram_used = max(self.peak_vram_used, self.vram_used)

    def check_serving(self) -> None:
        if self.draining or self.is_sleeping:
            self.counters["rejected"] += 1
            raise EmulatorError("The engine is sleeping; call POST /wake_up before sending requests.", 503)
        if self.weights == EMPTY:
            self.counters["rejected"] += 1
            raise EmulatorError(
                "The weights were discarded by sleep level 2; call POST /collective_rpc "
                '{"method": "reload_weights"} after /wake_up before sending requests.',
                503,
            )

    async def sleep(self, level: int) -> None:
        async with self._op_lock:
            self.draining = True
            try:
                await self._idle.wait()
            finally:
                self.draining = False
            if self.weights in (AWAKE, EMPTY):
                self.weights = OFFLOADED if level == 1 and self.weights == AWAKE else DISCARDED
            elif level == 2:
                self.weights = DISCARDED
            self.kv_cache = "asleep"
            self.sleep_level = level
            self.counters["sleeps"] += 1

    async def wake_up(self, tags: list[str]) -> None:
        async with self._op_lock:
            if "weights" in tags and self.weights in (OFFLOADED, DISCARDED):
                fraction = WAKE_FRACTION if self.weights == OFFLOADED else ALLOCATE_FRACTION
                self.weights = AWAKE if self.weights == OFFLOADED else EMPTY
                self._track_peak()
                await asyncio.sleep(fraction * self.load_seconds * self.time_scale)
            if "kv_cache" in tags and self.kv_cache != AWAKE:
                self.kv_cache = AWAKE
                self._track_peak()
                await asyncio.sleep(ALLOCATE_FRACTION * self.load_seconds * self.time_scale)
            if not self.is_sleeping:
                self.sleep_level = 0
            self.counters["wakes"] += 1

    async def reload_weights(self) -> None:
        async with self._op_lock:
            if self.weights in (OFFLOADED, DISCARDED):
                raise BadRequest("reload_weights needs the weights memory: call POST /wake_up first")
            await asyncio.sleep(self.load_seconds * self.time_scale)
            self.weights = AWAKE
            self.counters["weight_reloads"] += 1

    def stats(self) -> dict[str, Any]:
        return {
            "emulator": True,
            "backend": "vllm",
            "model": self.model,
            "size_bytes": self.size_bytes,
            "vram_used": self.vram_used,
            "peak_vram_used": self.peak_vram_used,
            "cpu_bytes": self.weight_bytes if self.weights == OFFLOADED else 0,
            "is_sleeping": self.is_sleeping,
            "sleep_level": self.sleep_level,
            "weights": self.weights,
            "kv_cache": self.kv_cache,
            "in_flight": self.in_flight,
            **self.counters,
        }


ENGINE_KEY: web.AppKey[VllmEngine] = web.AppKey("prewarm_vllm_engine", VllmEngine)


def _engine(request: web.Request) -> VllmEngine:
    return request.app[ENGINE_KEY]


async def is_sleeping(request: web.Request) -> web.Response:
    return json_response({"is_sleeping": _engine(request).is_sleeping})


async def sleep(request: web.Request) -> web.Response:
    raw = request.query.get("level", "1")
    if raw not in ("1", "2"):
        raise BadRequest(f"level must be 1 or 2, got {raw!r}")
    await _engine(request).sleep(int(raw))
    return web.Response(status=200)


async def wake_up(request: web.Request) -> web.Response:
    tags = request.query.getall("tags", []) or ["weights", "kv_cache"]
    unknown = [t for t in tags if t not in ("weights", "kv_cache")]
    if unknown:
        raise BadRequest(f"unknown tags {unknown}: use weights and/or kv_cache")
    await _engine(request).wake_up(tags)
    return web.Response(status=200)


async def collective_rpc(request: web.Request) -> web.Response:
    body = await read_json(request)
    method = body.get("method")
    if method != "reload_weights":
        raise BadRequest(f"the emulator supports only the reload_weights method, got {method!r}")
    await _engine(request).reload_weights()
    return json_response({"results": [None]})


async def models(request: web.Request) -> web.Response:
    return json_response({"object": "list", "data": [model_card(_engine(request), "vllm")]})


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def version(request: web.Request) -> web.Response:
    return json_response({"version": VERSION, "emulator": True})


async def stats(request: web.Request) -> web.Response:
    return json_response(_engine(request).stats())


def make_vllm_app(
    model: str,
    size_bytes: int,
    load_seconds: float,
    time_scale: float = 1.0,
    tokens_per_second: float = 200.0,
) -> web.Application:
    """A vLLM server for ``model`` that starts awake, holding ``size_bytes`` of emulated VRAM."""
    app = web.Application(middlewares=[errors_middleware])
    app[ENGINE_KEY] = app[SERVING_KEY] = VllmEngine(model, size_bytes, load_seconds, time_scale, tokens_per_second)
    app.on_response_prepare.append(mark_emulator)
    app.add_routes(
        [
            web.get("/is_sleeping", is_sleeping),
            web.post("/sleep", sleep),
            web.post("/wake_up", wake_up),
            web.post("/collective_rpc", collective_rpc),
            web.get("/v1/models", models),
            *openai_routes(),
            web.get("/health", health),
            web.get("/version", version),
            web.get("/emulator/stats", stats),
        ]
    )
    return app
