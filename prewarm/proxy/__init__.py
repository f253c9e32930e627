"""The transparent proxy: Ollama /api/*, OpenAI-compatible /v1/*, streaming passthrough.

It knows the `ProxyHooks` protocol and `Store.put`, nothing of the prewarmer, the
planner, the forecaster or the admin routes (those reach it through `make_proxy_app`'s
arguments: prewarm.admin.make_service_app).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prewarm._faces import lazy_face

if TYPE_CHECKING:
    from prewarm.proxy.app import DRAIN_KEY, LAG_KEY, make_proxy_app, make_upstream_session
    from prewarm.proxy.hooks import ProxyHooks
    from prewarm.proxy.protocol import RequestInfo, Usage, model_name_problem, parse_request, usage_from_tail, user_of

_EXPORTS = {
    "DRAIN_KEY": "prewarm.proxy.app",
    "LAG_KEY": "prewarm.proxy.app",
    "ProxyHooks": "prewarm.proxy.hooks",
    "RequestInfo": "prewarm.proxy.protocol",
    "Usage": "prewarm.proxy.protocol",
    "make_proxy_app": "prewarm.proxy.app",
    "make_upstream_session": "prewarm.proxy.app",
    "model_name_problem": "prewarm.proxy.protocol",
    "parse_request": "prewarm.proxy.protocol",
    "usage_from_tail": "prewarm.proxy.protocol",
    "user_of": "prewarm.proxy.protocol",
}
__all__ = [
    "DRAIN_KEY",
    "LAG_KEY",
    "ProxyHooks",
    "RequestInfo",
    "Usage",
    "make_proxy_app",
    "make_upstream_session",
    "model_name_problem",
    "parse_request",
    "usage_from_tail",
    "user_of",
]
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
