"""Admin routes (/prewarm/*, /metrics) and the token guard in front of them.

On loopback only local users can reach the proxy, so no token is needed; on any
other address the admin routes can read the request log (users, models), so a
token is required and `serve` refuses to start without one. Only admin routes pay
for the check: the proxy's own path is untouched by it.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from prewarm import __version__
from prewarm.config import ConfigError, Settings
from prewarm.errors import one_line
from prewarm.proxy.hooks import ProxyHooks
from prewarm.proxy.lag import LoopLag
from prewarm.store.readonly import QueryTimeout, ReadOnlyError, check_read_only, jsonable
from prewarm.store.writer import Store, StoreUnavailable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_SQL_BYTES = 1 << 20


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_admin_token(settings: Settings) -> None:
    """Refuse to expose admin routes beyond loopback without a token."""
    if settings.admin_token is not None and not settings.admin_token.strip():
        raise ConfigError("admin_token is empty or only whitespace: set a real token or leave it unset")
    if not is_loopback(settings.listen_host) and not settings.admin_token:
        raise ConfigError(
            f"listening on {settings.listen_host} (not loopback) needs admin_token "
            "(config file or PREWARM_ADMIN_TOKEN) to protect /prewarm/* and /metrics"
        )


# Routes a client may call as well as an admin: off loopback an API key (api_keys) opens them too.
HINT_PATH = "/prewarm/hint"
CLIENT_ROUTES = frozenset({("POST", HINT_PATH)})


def admin_guard(settings: Settings, api_keys_too: bool = False) -> Callable[[Handler], Handler]:
    """Decorator: the handler runs only with `Authorization: Bearer <admin_token>` off loopback (or, with
    `api_keys_too`, a configured API key)."""
    needed = not is_loopback(settings.listen_host) or bool(settings.admin_token)
    expected = f"Bearer {settings.admin_token or ''}".encode()

    def wrap(handler: Handler) -> Handler:
        if not needed:
            return handler

        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            given = request.headers.get("Authorization", "").encode()
            if api_keys_too and given[:7].lower() == b"bearer " and settings.user_for_api_key(
                    given[7:].decode("latin-1").strip()) is not None:
                return await handler(request)
            if not settings.admin_token or not hmac.compare_digest(given, expected):
                return web.json_response(
                    {"error": "admin token required: Authorization: Bearer <admin_token>"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="prewarm"'},
                )
            return await handler(request)

        return guarded

    return wrap


# Ollama's routes that change what the server holds on disk; off loopback they are admin operations.
MANAGEMENT_PATHS = ("/api/delete", "/api/pull", "/api/push", "/api/create", "/api/copy")


def management_guard(settings: Settings) -> Callable[[Handler], Handler]:
    """Off loopback, Ollama's management routes need the admin token unless open_management_routes says not.

    Anyone who can reach the proxy can send a prompt; deleting or pulling models
    is another matter. On loopback they pass as before (only local users get there).
    """
    if is_loopback(settings.listen_host) or settings.open_management_routes:
        return lambda handler: handler
    return admin_guard(settings)


def guard_routes(routes: Iterable[web.RouteDef], settings: Settings) -> list[web.RouteDef]:
    guard, client_guard = admin_guard(settings), admin_guard(settings, api_keys_too=True)
    return [web.RouteDef(r.method, r.path, (client_guard if (r.method, r.path) in CLIENT_ROUTES else guard)(r.handler),
                         dict(r.kwargs)) for r in routes]


def admin_routes(settings: Settings, store: Store, lag: LoopLag | None = None,
                 hooks: ProxyHooks | None = None) -> list[web.RouteDef]:
    """GET /prewarm/health (with the event loop's lag when `lag` is given) and POST /prewarm/sql, behind the guard."""

    slots = asyncio.Semaphore(settings.sql_concurrency)

    async def health(request: web.Request) -> web.Response:
        """200 while the proxy, its request log and the upstream work; 503 with the reasons when one does not."""
        store.ensure_writer()
        writer_ok, problem = store.healthy
        problems = [] if writer_ok else [problem]
        upstream = hooks.upstream_problem() if hooks is not None else None
        if upstream is not None:
            problems.append(upstream)
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

    async def sql(request: web.Request) -> web.Response:
        raw = await request.content.read(MAX_SQL_BYTES + 1)
        if len(raw) > MAX_SQL_BYTES:
            return _err(413, "SQL text too long")
        try:
            body: Any = json.loads(raw or b"null")
        except (ValueError, RecursionError):
            return _err(400, 'body must be JSON {"sql": "..."}')
        if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
            return _err(400, 'body must be JSON {"sql": "..."}')
        try:
            check_read_only(body["sql"])  # refused before it waits for a slot or a flush
            async with asyncio.timeout(settings.sql_timeout):
                await slots.acquire()
        except ReadOnlyError as exc:
            return _err(400, str(exc))
        except TimeoutError:
            return _err(503, f"{settings.sql_concurrency} queries are already running; try again later")
        try:
            await store.flush(timeout=settings.sql_timeout)  # read your writes: rows accepted before it are in
            columns, rows = await store.query(body["sql"], timeout=settings.sql_timeout)
        except ReadOnlyError as exc:
            return _err(400, str(exc))
        except QueryTimeout as exc:
            return _err(408, str(exc))
        except StoreUnavailable as exc:
            return _err(503, str(exc))
        except Exception as exc:  # a DuckDB error in the user's SQL (unknown column...)
            return _err(400, one_line(exc))
        finally:
            slots.release()
        payload = {"columns": columns, "rows": [[jsonable(v) for v in row] for row in rows]}
        return web.json_response(payload, dumps=lambda o: json.dumps(o, allow_nan=False))

    return guard_routes([web.get("/prewarm/health", health), web.post("/prewarm/sql", sql)], settings)


def fallback_route(settings: Settings) -> list[web.RouteDef]:
    """Unknown /prewarm/* paths answer 404 here instead of leaking to the upstream."""

    async def not_found(request: web.Request) -> web.Response:
        return _err(404, f"no admin route {request.method} {request.path}")

    return guard_routes([web.route("*", r"/prewarm/{tail:[\s\S]*}", not_found)], settings)


def _err(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
