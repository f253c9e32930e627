"""GET /prewarm/health: one body that says whether the proxy, its request log and the upstream work."""

from __future__ import annotations

import os

from aiohttp import web

from prewarm import __version__
from prewarm.config import Settings
from prewarm.proxy.app import LAG_KEY
from prewarm.proxy.hooks import ProxyHooks
from prewarm.store.writer import Store


def health_route(settings: Settings, store: Store, hooks: ProxyHooks | None) -> web.RouteDef:
    async def health(request: web.Request) -> web.Response:
        """200 while the proxy, its request log and the upstream work; 503 with the reasons when one does not."""
        store.ensure_writer()
        writer_ok, problem = store.healthy
        problems = [] if writer_ok else [problem]
        upstream = hooks.upstream_problem() if hooks is not None else None
        if upstream is not None:
            problems.append(upstream)
        lag = request.app.get(LAG_KEY)
        return web.json_response(
            {
                "ok": not problems,
                "problems": problems,
                "version": __version__,
                "pid": os.getpid(),
                "upstream": settings.upstream,
                "db": store.path,
                "db_available": store.available,
                "store": store.counters,
                "loop_lag": lag.summary() if lag is not None else None,
            },
            status=200 if not problems else 503,
        )

    return web.get("/prewarm/health", health)
