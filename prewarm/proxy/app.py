"""The transparent proxy: every request forwarded as is, one RequestEvent logged for each.

Hot path rules: one shared ClientSession (pooled upstream connections); a body is
read and parsed (one json.loads) only on the endpoints that name a model; response
bytes are written to the client as they arrive, never re-encoded; token counts are
taken from the last few KB of the response afterwards; the row goes to the store's
in-memory queue. Nothing on this path waits for the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from prewarm.config import Settings
from prewarm.errors import one_line
from prewarm.proxy.connections import BodyBudget
from prewarm.proxy.hooks import ProxyHooks
from prewarm.proxy.lag import LoopLag
from prewarm.proxy.protocol import (
    HOP_BY_HOP,
    MANAGEMENT_PATHS,
    MODEL_ENDPOINTS,
    MODEL_LISTS,
    NON_LOADING_ENDPOINTS,
    PRESENCE_ENDPOINTS,
    REQUEST_DROP,
    TAIL_KEEP,
    RequestInfo,
    api_of,
    error_body,
    parse_request,
    stream_finished,
    usage_from_tail,
    user_of,
)
from prewarm.records import RequestEvent
from prewarm.store.writer import Store

log = logging.getLogger(__name__)

SESSION_KEY = web.AppKey("prewarm_upstream_session", aiohttp.ClientSession)
LAG_KEY = web.AppKey("prewarm_loop_lag", LoopLag)


class Draining:
    """Set once serve stops: every answer from then on closes its connection, so no client reuses one
    that is about to go away (a request sent on a connection as it closes would get no answer at all)."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False


DRAIN_KEY = web.AppKey("prewarm_draining", Draining)
BODY_BUDGET_KEY = web.AppKey("prewarm_body_budget", BodyBudget)
STATUS_CLIENT_GONE = 499
_DELIVERED = web.RequestKey("prewarm_delivered", bool)  # the upstream's whole answer went to the client
_STREAMED_BODY_DROP = HOP_BY_HOP | {"host"}


def make_upstream_session(settings: Settings) -> aiohttp.ClientSession:
    """The one pooled session to the upstream.

    No automatic Accept-Encoding/User-Agent/Accept and no decompression: the
    upstream sees the client's headers and the client gets the upstream's bytes.
    sock_read bounds the wait for each next chunk (a model load included), not the
    length of a long stream.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=settings.request_timeout),
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept"),
        cookie_jar=aiohttp.DummyCookieJar(),  # cookies pass through as headers; a jar would mix clients
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_proxy_app(
    settings: Settings,
    store: Store,
    hooks: ProxyHooks,
    routes: Iterable[web.RouteDef] = (),
    management_guard: Callable[[Handler], Handler] = lambda handler: handler,
    session: aiohttp.ClientSession | None = None,
) -> web.Application:
    """The proxy app. `routes` are matched before the proxy's catch-all (the admin routes, already guarded);
    `management_guard` wraps Ollama's management routes; `session` lets serve share its pooled session."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    lag = app[LAG_KEY] = LoopLag()
    drain = app[DRAIN_KEY] = Draining()
    budget = app[BODY_BUDGET_KEY] = BodyBudget(settings.max_buffered_bytes)

    async def upstream_session(app: web.Application) -> Any:
        own = session is None
        app[SESSION_KEY] = session if session is not None else make_upstream_session(settings)
        lag.start()
        yield
        await lag.stop()
        if own:
            await app[SESSION_KEY].close()

    app.cleanup_ctx.append(upstream_session)
    app.add_routes(routes)
    # [\s\S], not ".": a path with an encoded newline (%0a) must be proxied and logged like any other.
    forwarder = _Forwarder(settings, store, hooks, drain, budget)
    for path in MANAGEMENT_PATHS:
        app.router.add_route("*", path, management_guard(forwarder.handle))
    app.router.add_route("*", r"/{tail:[\s\S]*}", forwarder.handle)
    return app


class _Forwarder:
    def __init__(self, settings: Settings, store: Store, hooks: ProxyHooks, drain: Draining,
                 budget: BodyBudget) -> None:
        self.settings = settings
        self.store = store
        self.hooks = hooks
        self.base = settings.upstream.rstrip("/")
        self.drain = drain
        self.budget = budget

    async def handle(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        endpoint = request.path
        known = endpoint in MODEL_ENDPOINTS and request.method == "POST"
        event = RequestEvent(
            id=os.urandom(16).hex(),  # 32 hex digits like uuid4().hex, without building a UUID per request
            ts_start=datetime.now(UTC),
            ts_end=None,
            model=None,
            user_id=None,
            api=api_of(endpoint),
            endpoint=endpoint,
            stream=False,
            status=0,
            upstream=self.settings.upstream,
        )
        model: str | None = None
        loads = False
        held = 0  # bytes of the body budget this request holds
        try:
            data: Any = None
            info: RequestInfo | None = None
            if known:
                limit = self.settings.max_body_bytes
                if request.content_length is not None and request.content_length > limit:
                    return self._refuse(request, event, 413, f"request body over the {limit}-byte limit")
                want = limit if request.content_length is None else request.content_length
                if not self.budget.take(want):
                    return self._refuse(request, event, 503, "too many request bytes in flight; try again soon",
                                        {"Retry-After": "1"})
                held = want
                try:
                    async with asyncio.timeout(self.settings.body_timeout):
                        data = await request.read()
                except web.HTTPRequestEntityTooLarge:
                    return self._refuse(request, event, 413, f"request body over the {limit}-byte limit")
                except TimeoutError:
                    resp = self._refuse(request, event, 408,
                                        f"request body not received within {self.settings.body_timeout:g} s")
                    resp.force_close()  # the rest of the body may still come: this connection cannot be reused
                    return resp
                info = parse_request(endpoint, data)
                # Checked (parse_request) and canonicalised here, once: the log and every hook see one name per model.
                model = event.model = None if info.model is None else self.hooks.canonical(info.model)
                event.stream = info.stream
                if info.refused:
                    return self._refuse(request, event, 400, info.error or "invalid model name")
                if info.error:
                    event.error = info.error
                headers = _without(request.headers, REQUEST_DROP)
            else:
                if request.body_exists:
                    data = _timed_body(request.content, self.settings.body_timeout)
                headers = _without(request.headers, _STREAMED_BODY_DROP)
            event.user_id = user_of(request.headers, info.user if info else None, self.settings)
            if event.user_id is not None and (request.method, endpoint) in PRESENCE_ENDPOINTS:
                self.hooks.user_seen(event.user_id)
            if request.method == "GET" and endpoint in MODEL_LISTS:
                servers = self.hooks.model_servers()
                if servers is not None:
                    return await self._list_models(request, event, servers)
            base = self.base
            if model is not None:
                base = (self.hooks.upstream_for(model) or self.base).rstrip("/")
                event.upstream = base

            if model is not None and endpoint not in NON_LOADING_ENDPOINTS:
                loads = True
                resident = self.hooks.is_resident(model)
                event.cold = None if resident is None else not resident
                self.hooks.request_started(model)
                replacement = await self._before_forward(model, info, endpoint)
                if replacement is not None:
                    data = json.dumps(replacement).encode()

            return await self._forward(request, event, base, headers, data, known, t0)
        except asyncio.CancelledError:
            if not request.get(_DELIVERED):
                event.status = STATUS_CLIENT_GONE
                event.error = "client disconnected"
            raise
        finally:
            if held:
                self.budget.give(held)
            now = time.perf_counter()
            event.ts_end = datetime.now(UTC)
            event.total_ms = (now - t0) * 1000.0
            if event.status == 404:
                event.cold = None  # the upstream does not have the model: nothing was loaded, nothing was cold
            if loads:
                self.hooks.request_finished(model, event)  # type: ignore[arg-type]
            self.store.put(event)

    async def _before_forward(self, model: str, info: RequestInfo | None, endpoint: str) -> dict[str, Any] | None:
        """The prewarmer's chance to make room first; its failure must not fail the request."""
        try:
            body = info.body if info is not None and info.body is not None else {}
            return await self.hooks.before_forward(model, body, endpoint)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("before_forward hook failed for %s; forwarding unchanged", model)
            return None

    async def _forward(
        self,
        request: web.Request,
        event: RequestEvent,
        base: str,
        headers: CIMultiDict[str],
        data: Any,
        known: bool,
        t0: float,
    ) -> web.StreamResponse:
        session = request.app[SESSION_KEY]
        target = request.raw_path
        if target[:1] != "/":  # absolute-form (GET http://host/path): the upstream gets the path alone
            target = request.rel_url.raw_path_qs
        url = URL(base + target, encoded=True)
        endpoint = event.endpoint
        try:
            up_cm = session.request(request.method, url, headers=headers, data=data, allow_redirects=False)
            up = await up_cm.__aenter__()
        except TimeoutError:
            return self._error(event, endpoint, 504, f"upstream {base} did not answer in time")
        except aiohttp.ClientError as exc:
            return self._error(event, endpoint, 502, f"upstream {base} unreachable: {one_line(exc)}")
        if event.model is not None:
            self.hooks.upstream_answered(event.model)

        resp = web.StreamResponse(
            status=up.status,
            reason=up.reason,
            headers=_without(up.headers, HOP_BY_HOP),
        )
        event.status = up.status
        if self.drain.on:
            resp.force_close()
        tail = bytearray() if known or up.status >= 400 else None
        try:
            await resp.prepare(request)
            read = up.content.readany
            chunk = await read()
            if chunk:
                event.ttft_ms = (time.perf_counter() - t0) * 1000.0
            while chunk:
                await resp.write(chunk)
                if tail is not None:
                    tail += chunk
                    if len(tail) > 2 * TAIL_KEEP:
                        del tail[:-TAIL_KEEP]
                chunk = await read()
            request[_DELIVERED] = True
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError) as exc:
            up.close()
            # A client that hangs up once it has the end marker (the openai client does, after
            # data: [DONE], before the closing chunk) was served in full.
            if tail and stream_finished(bytes(tail)):
                request[_DELIVERED] = True
            if request.get(_DELIVERED):
                if tail:
                    self._fill_from_tail(event, bytes(tail))
            else:
                event.status = STATUS_CLIENT_GONE
                event.error = "client disconnected"
            if isinstance(exc, asyncio.CancelledError):
                raise
            return resp
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Headers are gone already: the client can only see the stream cut short.
            event.status = 502
            event.error = f"upstream stream broken: {one_line(exc) or type(exc).__name__}"
            if request.transport is not None:
                request.transport.close()
            return resp
        finally:
            await up_cm.__aexit__(None, None, None)
        if tail:
            self._fill_from_tail(event, bytes(tail))
        return resp

    @staticmethod
    def _fill_from_tail(event: RequestEvent, tail: bytes) -> None:
        if event.status >= 400:
            event.error = _upstream_error(tail)
            return
        usage = usage_from_tail(tail)
        event.prompt_tokens = usage.prompt_tokens
        event.completion_tokens = usage.completion_tokens
        event.load_ms = usage.load_ms

    async def _list_models(self, request: web.Request, event: RequestEvent,
                           servers: dict[str, tuple[str, int]]) -> web.Response:
        """/v1/models or /api/tags answered by the proxy where every model has its own server (vLLM, SGLang):
        no single upstream can list them all, so each server's /v1/models is asked and the answers merged.
        The one documented exception to forwarding byte for byte (docs/prewarmer.md)."""
        session = request.app[SESSION_KEY]

        async def cards(model: str, url: str) -> list[dict[str, Any]]:
            try:
                async with session.get(f"{url.rstrip('/')}/v1/models") as up:
                    body = await up.json(content_type=None)
                return [c for c in body.get("data", []) if isinstance(c, dict)] if isinstance(body, dict) else []
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("listing models: %s's server %s did not answer: %s", model, url, one_line(exc))
                return []

        found = await asyncio.gather(*(cards(m, url) for m, (url, _) in servers.items()))
        listed = {str(c.get("id")): c for group in found for c in group if c.get("id")}
        for m in servers:  # a configured model whose server is down is still one the service serves
            listed.setdefault(m, {"id": m, "object": "model", "owned_by": "prewarm"})
        event.status, event.upstream = 200, "prewarm"
        if event.endpoint == "/v1/models":
            return web.json_response({"object": "list", "data": [listed[m] for m in sorted(listed)]})
        now = datetime.now(UTC).isoformat()
        return web.json_response({"models": [
            {"name": m, "model": m, "modified_at": now, "size": servers[m][1] if m in servers else 0,
             "digest": "", "details": {"format": "", "family": "", "parameter_size": "", "quantization_level": ""}}
            for m in sorted(listed)]})

    def _refuse(self, request: web.Request, event: RequestEvent, status: int, message: str,
                headers: dict[str, str] | None = None) -> web.Response:
        """An answer of the proxy's own before the body was read: the user comes from the headers alone."""
        event.user_id = user_of(request.headers, None, self.settings)
        return self._error(event, event.endpoint, status, message, headers)

    def _error(self, event: RequestEvent, endpoint: str, status: int, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
        event.status = status
        event.error = message
        resp = web.Response(status=status, body=error_body(endpoint, status, message), content_type="application/json",
                            headers=headers)
        if self.drain.on:
            resp.force_close()
        return resp


async def _timed_body(content: aiohttp.StreamReader, timeout: float) -> Any:
    """A streamed request body whose every next chunk must arrive within `timeout` seconds."""
    while True:
        async with asyncio.timeout(timeout):
            chunk = await content.readany()
        if not chunk:
            return
        yield chunk


def _upstream_error(tail: bytes) -> str:
    """The upstream's own error message when its body says one, else the start of the body."""
    text = tail.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return text[:500]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        err = err.get("message")
    return str(err)[:500] if err is not None else text[:500]


def _without(headers: Any, names: frozenset[str]) -> CIMultiDict[str]:
    """A copy of `headers` less `names` (lower case): the copy and the removals run in multidict's C code,
    not in a Python loop over every header of every request."""
    out = CIMultiDict(headers)
    for name in names:
        out.popall(name, None)
    return out
