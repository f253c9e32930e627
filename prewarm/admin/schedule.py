"""POST /prewarm/train and /prewarm/forecast: run a scheduler job now (what `prewarm train` asks a running
service)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from prewarm.scheduler import ForecastScheduler


def schedule_routes(sched: ForecastScheduler) -> list[web.RouteDef]:
    async def train(request: web.Request) -> web.Response:
        result = await sched.train_now()
        if result is None:
            return web.json_response({"ok": False, "error": sched.last_error}, status=500)
        return web.json_response({"ok": True, "run_id": result.run_id, "accepted": result.accepted,
                                  "reason": result.reason, "n_models": result.n_models,
                                  "artifact_path": result.artifact_path})

    async def forecast(request: web.Request) -> web.Response:
        frame = await sched.forecast_now()
        if frame is None:
            return web.json_response({"ok": False, "error": "no trained forecaster yet: train first"}, status=409)
        return web.json_response({"ok": True, "rows": len(frame), "models": int(frame["model"].nunique())})

    return [web.post("/prewarm/train", train), web.post("/prewarm/forecast", forecast)]
