"""Admin routes of the prewarmer under /prewarm/: status, manual load/unload, pins, hints, and /metrics.

Behind the admin guard (`prewarm.admin.routes` puts them there); this module only
turns HTTP into Prewarmer calls and errors into the {"error": ...} shape.
"""

from __future__ import annotations

from aiohttp import web

from prewarm.admin.errors import error as err
from prewarm.admin.guard import HINT_PATH
from prewarm.admin.metrics import metrics_route
from prewarm.errors import ActionRefused, BackendError, ConfigError
from prewarm.prewarmer import Prewarmer
from prewarm.prewarmer.status import status as status_of
from prewarm.proxy.protocol import model_name_problem
from prewarm.store.writer import StoreUnavailable


def prewarmer_routes(prewarmer: Prewarmer) -> list[web.RouteDef]:
    async def status(request: web.Request) -> web.Response:
        return web.json_response(status_of(prewarmer))

    async def load(request: web.Request) -> web.Response:
        try:
            result = await prewarmer.load_now(request.match_info["model"])
        except ActionRefused as exc:
            return err(409, str(exc))
        except (BackendError, ConfigError) as exc:
            return err(502, str(exc))
        return web.json_response(result, status=200 if result["ok"] else 502)

    async def unload(request: web.Request) -> web.Response:
        try:
            result = await prewarmer.unload_now(request.match_info["model"])
        except ActionRefused as exc:
            return err(409, str(exc))
        return web.json_response(result, status=200 if result["ok"] else 502)

    async def hint(request: web.Request) -> web.Response:
        """POST /prewarm/hint {"user": ..., "model": optional}: a user is here (logged in, picked a model, is
        typing): have that model, or their usual ones, ready before the request."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return err(400, 'body must be JSON {"user": "...", "model": "..."} (model optional)')
        user, model = body.get("user"), body.get("model")
        if user is not None and not isinstance(user, str) or model is not None and not isinstance(model, str):
            return err(400, "user and model must be strings")
        if model is not None and (problem := model_name_problem(model)):
            return err(400, problem)
        if not user and not model:
            return err(400, "give a user, a model, or both")
        try:
            return web.json_response(await prewarmer.hint(user, model))
        except StoreUnavailable as exc:  # a user's usual models come from the log
            return err(503, f"the request log cannot be read now: {exc}")

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
        web.post(HINT_PATH, hint),
        web.delete("/prewarm/pin/{model:.+}", unpin),
        metrics_route(prewarmer.metrics),
    ]
