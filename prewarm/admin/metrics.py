"""GET /metrics: the prewarmer's Prometheus registry in the text format (behind the admin guard)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from prewarm.prewarmer.metrics import PrewarmMetrics


def metrics_route(metrics: PrewarmMetrics) -> web.RouteDef:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return web.get("/metrics", handler)
