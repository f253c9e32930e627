"""Every admin route (/prewarm/* and /metrics), assembled in one `routes()` behind one guard.

The proxy package knows nothing of this one: `make_service_app` hands the assembled routes
and the management-route guard to the proxy app, so the proxy stays a proxy and
the replay, which imports neither, stays free of both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from prewarm.admin.errors import error
from prewarm.admin.guard import HINT_PATH, Guard, check_admin_token, is_loopback
from prewarm.admin.health import health_route
from prewarm.admin.sql import MAX_SQL_BYTES, sql_route
from prewarm.config import Settings
from prewarm.proxy.app import make_proxy_app
from prewarm.proxy.hooks import ProxyHooks
from prewarm.store.writer import Store

if TYPE_CHECKING:
    from prewarm.prewarmer import Prewarmer
    from prewarm.scheduler import ForecastScheduler

__all__ = ["HINT_PATH", "MAX_SQL_BYTES", "Guard", "check_admin_token", "is_loopback", "make_service_app", "routes"]


def routes(settings: Settings, store: Store, guard: Guard, hooks: ProxyHooks | None = None,
           prewarmer: Prewarmer | None = None, scheduler: ForecastScheduler | None = None) -> list[web.RouteDef]:
    """Health, SQL, the prewarmer's operations, the scheduler's jobs, /metrics and the status page, then a
    404 for any other /prewarm/* path (it must not leak to the upstream), all behind `guard`."""
    found = [health_route(settings, store, hooks if hooks is not None else prewarmer), sql_route(settings, store)]
    if prewarmer is not None:
        from prewarm.admin.operations import prewarmer_routes
        from prewarm.admin.ui import ui_routes

        found += prewarmer_routes(prewarmer)
        found += ui_routes(settings, store, guard, prewarmer)
    if scheduler is not None:
        from prewarm.admin.schedule import schedule_routes

        found += schedule_routes(scheduler)

    async def not_found(request: web.Request) -> web.Response:
        return error(404, f"no admin route {request.method} {request.path}")

    found.append(web.route("*", r"/prewarm/{tail:[\s\S]*}", not_found))
    return guard.routes(found)


def make_service_app(settings: Settings, store: Store, hooks: ProxyHooks, prewarmer: Prewarmer | None = None,
             scheduler: ForecastScheduler | None = None,
             session: aiohttp.ClientSession | None = None) -> web.Application:
    """The proxy app with its admin routes: what `serve` and the demo run, and what the tests exercise."""
    guard = Guard(settings)
    return make_proxy_app(settings, store, hooks, routes(settings, store, guard, hooks, prewarmer, scheduler),
                          guard.management(), session=session)
