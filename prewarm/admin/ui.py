"""The status page at /prewarm/ui: one static HTML file that reads /prewarm/ui/data and redraws itself.

No build step and no CDN: the page is a file of this package with its script and
styles inline, so it works on a machine with no outside network, which is where
many GPU boxes live. What it shows comes from one JSON document assembled here
from the prewarmer's live state and a few reads of the contract tables
(`prewarm.store.queries`), so anything the page shows can also be had with SQL.
"""

from __future__ import annotations

import asyncio
import html
import json
import math
from importlib import resources
from typing import Any

from aiohttp import web

from prewarm.admin.errors import error
from prewarm.admin.guard import LOGIN_PATH, LOGOUT_PATH, SESSION_COOKIE, UI_PATH, Guard
from prewarm.config import Settings
from prewarm.prewarmer import Prewarmer, status
from prewarm.store import queries
from prewarm.store.readonly import jsonable
from prewarm.store.writer import Store, StoreUnavailable

SESSION_MAX_AGE_S = 12 * 3600
HEAT_MODELS = 16  # rows of the heat map: the models most likely to be asked for, then the busiest
PAST_WINDOWS = 12  # windows of what happened shown before the forecast's first
DAY_BUCKETS = 48  # the last day in half hours
ACTIONS_SHOWN = 25
RUNS_SHOWN = 8
WRONG_TOKEN_DELAY_S = 0.5  # a guess costs half a second: no brute force over HTTP


def _static(name: str) -> str:
    return resources.files("prewarm.admin").joinpath("static", name).read_text(encoding="utf-8")


def ui_routes(settings: Settings, store: Store, guard: Guard, prewarmer: Prewarmer | None) -> list[web.RouteDef]:
    page, login_page = _static("ui.html"), _static("login.html")

    def login_form(message: str = "", status: int = 200) -> web.Response:
        return web.Response(text=login_page.replace("{message}", html.escape(message)), status=status,
                            content_type="text/html", headers={"Cache-Control": "no-store"})

    async def ui(request: web.Request) -> web.StreamResponse:
        if not guard.allows(request):
            raise web.HTTPSeeOther(LOGIN_PATH)
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def login(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return login_form()
        form = await request.post()
        token = form.get("token")
        if not isinstance(token, str) or not guard.token_ok(token):
            await asyncio.sleep(WRONG_TOKEN_DELAY_S)
            return login_form("That is not the admin token.", status=401)
        response = web.HTTPSeeOther(UI_PATH)
        response.set_cookie(SESSION_COOKIE, guard.open_session(SESSION_MAX_AGE_S), max_age=SESSION_MAX_AGE_S,
                            path="/prewarm", httponly=True, samesite="Strict", secure=request.secure)
        raise response

    async def logout(request: web.Request) -> web.StreamResponse:
        guard.close_session(request)
        response = web.HTTPSeeOther(LOGIN_PATH)
        response.del_cookie(SESSION_COOKIE, path="/prewarm")
        raise response

    async def data(request: web.Request) -> web.Response:
        try:
            body = await page_data(settings, store, prewarmer)
        except StoreUnavailable as exc:
            return error(503, f"the request log cannot be read now: {exc}")
        return web.json_response(body, dumps=lambda o: json.dumps(o, allow_nan=False, default=str))

    return [web.get(UI_PATH, ui), web.get(LOGIN_PATH, login), web.post(LOGIN_PATH, login),
            web.post(LOGOUT_PATH, logout), web.get(UI_PATH + "/data", data)]


async def _rows(store: Store, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    columns, rows = await store.query(sql, params, timeout=10.0)
    return [{c: jsonable(v) for c, v in zip(columns, row, strict=True)} for row in rows]  # NaN, inf -> None


async def page_data(settings: Settings, store: Store, prewarmer: Prewarmer | None) -> dict[str, Any]:
    """Everything the page draws, in one document: live state, heat, the last day, actions, training runs."""
    state = status(prewarmer) if prewarmer is not None else None
    forecast = await _rows(store, queries.LATEST_FORECAST)
    span = (await _rows(store, queries.LAST_DAY_SPAN))[0]
    window = settings.window
    made_at = forecast[0]["made_at"] if forecast else None
    anchor = made_at if made_at is not None else span["until"]
    heat: dict[str, Any] = {"window_s": window, "made_at": made_at, "models": []}
    day: dict[str, Any] = {"bucket_s": None, "buckets": []}
    if anchor is not None:
        since = math.floor(anchor / window) * window - PAST_WINDOWS * window
        actual = await _rows(store, queries.REQUESTS_PER_WINDOW, {"window": window, "since": since})
        heat["models"] = _heat_rows(forecast, actual, state)
        heat["since"] = since
    if span["until"] is not None:
        bucket = max(60.0, (span["until"] - span["since"]) / DAY_BUCKETS)
        day = {"bucket_s": bucket, "since": span["since"], "until": span["until"],
               "buckets": await _rows(store, queries.LAST_DAY, {"bucket": bucket, "since": span["since"]})}
    return {
        "status": state,
        "window_s": window,
        "heat": heat,
        "day": day,
        "actions": await _rows(store, queries.LATEST_ACTIONS, {"limit": ACTIONS_SHOWN}),
        "training_runs": await _rows(store, queries.LATEST_TRAINING_RUNS, {"limit": RUNS_SHOWN}),
    }


def _heat_rows(forecast: list[dict[str, Any]], actual: list[dict[str, Any]],
               status: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per model: the forecast's windows (p_any, expected) beside the requests each window got."""
    rows: dict[str, dict[str, Any]] = {}

    def row(model: str) -> dict[str, Any]:
        return rows.setdefault(model, {"model": model, "forecast": [], "actual": [], "peak_p": 0.0,
                                       "requests": 0, "resident": False})

    for f in forecast:
        r = row(f["model"])
        r["forecast"].append({"start": f["window_start"], "p_any": f["p_any"], "expected": f["expected_requests"]})
        r["peak_p"] = max(r["peak_p"], f["p_any"] or 0.0)
    for a in actual:
        r = row(a["model"])
        r["actual"].append({"start": a["start"], "requests": a["requests"], "cold": a["cold"]})
        r["requests"] += a["requests"]
    for resident in (status or {}).get("resident", []):
        row(resident["model"])["resident"] = True
    ranked = sorted(rows.values(), key=lambda r: (-r["peak_p"], -r["requests"], r["model"]))
    return ranked[:HEAT_MODELS]
