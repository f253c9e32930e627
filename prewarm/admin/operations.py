"""Admin routes of the prewarmer under /prewarm/: status, manual load/unload, pins, hints, pushed forecasts,
and /metrics.

Behind the admin guard (`prewarm.admin.routes` puts them there); this module only
turns HTTP into Prewarmer calls and errors into the {"error": ...} shape.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from aiohttp import web

from prewarm.admin.errors import error as err
from prewarm.admin.guard import HINT_PATH
from prewarm.admin.metrics import metrics_route
from prewarm.errors import ActionRefused, BackendError, ConfigError
from prewarm.forecast.training import forecast_rows
from prewarm.prewarmer import Prewarmer
from prewarm.prewarmer.report import status as status_of
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

    async def plan(request: web.Request) -> web.Response:
        """POST /prewarm/plan {"run_id": optional, "rows": [forecast rows]}: plan from a forecaster outside
        prewarm (or a replay harness that runs the forecaster on a trace's clock), exactly as from the
        scheduler's own forecast; the rows are logged to ``forecasts`` like the scheduler's."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        run_id = body.get("run_id", "pushed") if isinstance(body, dict) else None
        frame = forecast_frame(body.get("rows") if isinstance(body, dict) else None)
        if isinstance(frame, str):
            return err(400, frame)
        if not isinstance(run_id, str):
            return err(400, "run_id must be a string")
        made_at = prewarmer.clock()
        try:
            if prewarmer.store is not None:
                prewarmer.store.put_rows("forecasts", forecast_rows(frame, run_id, made_at))
            actions = await prewarmer.apply_plan(frame, made_at)
        except ActionRefused as exc:
            return err(409, str(exc))
        except StoreUnavailable as exc:
            return err(503, f"the forecasts cannot be logged now: {exc}")
        return web.json_response({"ok": True, "rows": len(frame), "models": int(frame["model"].nunique()),
                                  "actions": [{"model": a.model, "action": a.action, "reason": a.reason}
                                              for a in actions]})

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
        web.post("/prewarm/plan", plan),
        web.delete("/prewarm/pin/{model:.+}", unpin),
        metrics_route(prewarmer.metrics),
    ]


FORECAST_ROW = ('{"model": "...", "window_start": epoch s, "window_end": epoch s, "expected_requests": n, '
                '"p_any": optional 0-1}')


def forecast_frame(rows: Any) -> pd.DataFrame | str:
    """Pushed forecast rows as the frame the planner reads, or the one-line reason they are refused."""
    if not isinstance(rows, list) or not rows:
        return f'body must be JSON {{"rows": [{FORECAST_ROW}, ...]}} with at least one row'
    out: dict[str, list[Any]] = {k: [] for k in ("model", "window_start", "window_end", "expected_requests",
                                                 "p_any", "lower", "upper")}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            return f"row {i}: an object {FORECAST_ROW} expected"
        model = row.get("model")
        if not isinstance(model, str) or (problem := model_name_problem(model)):
            return f"row {i}: model must be a model name" + (f" ({problem})" if isinstance(model, str) else "")
        nums: dict[str, float] = {}
        for key in ("window_start", "window_end", "expected_requests", "p_any", "lower", "upper"):
            v = row.get(key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                return f"row {i}: {key} must be a finite number"
            nums[key] = float(v)
        if "window_start" not in nums or "window_end" not in nums or "expected_requests" not in nums:
            return f"row {i}: window_start, window_end and expected_requests are required ({FORECAST_ROW})"
        mu = nums["expected_requests"]
        if nums["window_end"] <= nums["window_start"] or mu < 0:
            return f"row {i}: window_end must be after window_start and expected_requests >= 0"
        p = nums.get("p_any", 1.0 - math.exp(-mu))  # absent: a Poisson count's chance of at least one
        if not 0.0 <= p <= 1.0:
            return f"row {i}: p_any must be in [0, 1]"
        out["model"].append(model)
        for key in ("window_start", "window_end", "expected_requests"):
            out[key].append(nums[key])
        out["p_any"].append(p)
        out["lower"].append(nums.get("lower", mu))
        out["upper"].append(nums.get("upper", mu))
    return pd.DataFrame(out)
