"""Admin routes of the prewarmer under /prewarm/: status, manual load/unload, pins, and /metrics.

The proxy app puts these behind its admin guard (token off loopback); this module
only turns HTTP into Prewarmer calls and errors into the {"error": ...} shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from prewarm.backends.base import BackendError
from prewarm.config import ConfigError
from prewarm.metrics import metrics_route

if TYPE_CHECKING:
    from prewarm.prewarmer import Prewarmer


def routes(prewarmer: Prewarmer) -> list[web.RouteDef]:
    from prewarm.prewarmer import PrewarmError

    def err(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def status(request: web.Request) -> web.Response:
        return web.json_response(prewarmer.status())

    async def load(request: web.Request) -> web.Response:
        try:
            result = await prewarmer.load_now(request.match_info["model"])
        except PrewarmError as exc:
            return err(409, str(exc))
        except (BackendError, ConfigError) as exc:
            return err(502, str(exc))
        return web.json_response(result, status=200 if result["ok"] else 502)

    async def unload(request: web.Request) -> web.Response:
        try:
            result = await prewarmer.unload_now(request.match_info["model"])
        except PrewarmError as exc:
            return err(409, str(exc))
        return web.json_response(result, status=200 if result["ok"] else 502)

    async def pin(request: web.Request) -> web.Response:
        model = prewarmer.pin(request.match_info["model"])
        return web.json_response({"model": model, "pinned": True, "pins": sorted(prewarmer.pins)})

    async def unpin(request: web.Request) -> web.Response:
        model = prewarmer.unpin(request.match_info["model"])
        return web.json_response({"model": model, "pinned": False, "pins": sorted(prewarmer.pins)})

    return [
        web.get("/prewarm/status", status),
        web.post("/prewarm/load/{model:.+}", load),
        web.post("/prewarm/unload/{model:.+}", unload),
        web.post("/prewarm/pin/{model:.+}", pin),
        web.delete("/prewarm/pin/{model:.+}", unpin),
        metrics_route(prewarmer.metrics),
    ]
