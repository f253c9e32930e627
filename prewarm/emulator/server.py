"""The Ollama-compatible emulator app: /api/* and /v1/* on an emulated GPU (see runners.py)."""

from __future__ import annotations

from aiohttp import web

from prewarm.catalog import Catalog
from prewarm.emulator import ollama_api, openai_api
from prewarm.emulator.generation import Engine
from prewarm.emulator.runners import EmulatorError
from prewarm.emulator.web_common import json_response, mark_emulator, openai_error_body


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    """Expected failures become Ollama's {"error": ...} on /api and OpenAI's error object on /v1."""
    try:
        return await handler(request)
    except EmulatorError as exc:
        if request.path.startswith("/v1/"):
            return json_response(openai_error_body(exc.status, str(exc)), status=exc.status)
        return json_response({"error": str(exc)}, status=exc.status)


def make_app(
    catalog: Catalog,
    vram_bytes: int,
    time_scale: float = 1.0,
    tokens_per_second: float = 200.0,
    busy_wait_s: float = 30.0,
) -> web.Application:
    """An Ollama-compatible app over ``catalog`` with ``vram_bytes`` of emulated GPU memory.

    ``time_scale`` multiplies every load time; ``busy_wait_s`` is how long a request
    waits for a busy model to go idle when nothing can be evicted before it gets 503.
    """
    engine = Engine(catalog, vram_bytes, time_scale, tokens_per_second, busy_wait_s)
    app = web.Application(middlewares=[_errors])
    app[ollama_api.ENGINE_KEY] = engine
    app.on_response_prepare.append(mark_emulator)
    app.add_routes(ollama_api.routes())
    app.add_routes(openai_api.routes())

    async def _close(_: web.Application) -> None:
        engine.close()

    app.on_cleanup.append(_close)
    return app


def engine_of(app: web.Application) -> Engine:
    """The engine behind an app from :func:`make_app`, for tests and the demo to inspect."""
    return app[ollama_api.ENGINE_KEY]
