"""The proxy over HTTP: rows logged, streams passed through, every error path, transparency.

Two upstreams: the built-in emulator (Ollama's real shapes) and a small echo server
that reports exactly what arrived, to prove bytes, paths and headers go through untouched.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from proxy_helpers import idle_tracker
from yarl import URL

from prewarm.admin import Guard, check_admin_token, make_service_app, routes
from prewarm.backends import OllamaBackend
from prewarm.catalog import load_catalog, sample_catalog_path
from prewarm.config import ConfigError, Settings
from prewarm.emulator import make_app
from prewarm.prewarmer.residency import ResidencyTracker
from prewarm.proxy import make_proxy_app
from prewarm.records import RequestEvent
from prewarm.store import Store


class Stack:
    def __init__(self, url: str, store: Store, tracker: ResidencyTracker) -> None:
        self.url = url
        self.store = store
        self.tracker = tracker

    async def rows(self, where: str = "true") -> list[dict[str, Any]]:
        await self.store.flush()
        cols, rows = await self.store.query(f"SELECT * FROM requests WHERE {where} ORDER BY ts_start")
        return [dict(zip(cols, r, strict=False)) for r in rows]

    async def wait_rows(self, where: str, n: int = 1) -> list[dict[str, Any]]:
        for _ in range(200):
            rows = await self.rows(where)
            if len(rows) >= n:
                return rows
            await asyncio.sleep(0.05)
        raise AssertionError(f"no row where {where}")


async def start_stack(aiohttp_server, upstream_url: str, tmp_path: Path, hooks=None, cancel: bool = True,
                      **settings_kw) -> Stack:
    """Proxy + store + tracker; `cancel` is the server's handler_cancellation (serve turns it on)."""
    settings = Settings(upstream=upstream_url, db=str(tmp_path / "log.duckdb"), log_flush_interval=0.05, **settings_kw)
    store = Store(settings.db, settings)
    store.open()
    backend = OllamaBackend(upstream_url)
    tracker = ResidencyTracker(backend.list_resident, refresh_s=60)
    await tracker.start()
    app = make_service_app(settings, store, hooks or tracker)

    async def stop(_: web.Application) -> None:
        await tracker.stop()
        await backend.close()
        await store.close()

    app.on_cleanup.append(stop)
    if cancel:
        server = await aiohttp_server(app)
        return Stack(str(server.make_url("")).rstrip("/"), store, tracker)
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    _RUNNERS.append(runner)
    return Stack(f"http://127.0.0.1:{runner.addresses[0][1]}", store, tracker)


_RUNNERS: list[web.AppRunner] = []


@pytest.fixture(autouse=True)
async def _cleanup_runners():
    yield
    while _RUNNERS:
        await _RUNNERS.pop().cleanup()


@pytest.fixture
async def emulator(aiohttp_server):
    app = make_app(load_catalog(sample_catalog_path()), vram_bytes=24 * 10**9, time_scale=0.001, tokens_per_second=5000)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def stack(aiohttp_server, emulator, tmp_path) -> Stack:
    return await start_stack(aiohttp_server, emulator, tmp_path)


class Echo:
    """An upstream that answers with what it received, and one endless NDJSON stream."""

    def __init__(self) -> None:
        self.upstream_gone = asyncio.Event()
        self.app = web.Application(client_max_size=2**30)
        self.app.router.add_post("/api/generate", self.endless)
        self.app.router.add_post("/api/embed", self.slow)
        self.app.router.add_post("/v1/chat/completions", self.broken)
        self.app.router.add_route("*", "/{tail:.*}", self.echo)

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = {
            "method": request.method,
            "path_qs": request.raw_path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode("latin-1"),
        }
        return web.json_response(payload, status=207 if request.method == "PROPFIND" else 200,
                                 headers={"X-Upstream": "yes"})

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.json_response({})

    async def broken(self, request: web.Request) -> web.StreamResponse:
        """Dies after the first line, as an upstream that crashes mid-generation."""
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(b'{"message":{"content":"x"},"done":false}\n')
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async def endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b'{"response":"x","done":false}\n')
                await asyncio.sleep(0.02)
        except (ConnectionResetError, asyncio.CancelledError):
            self.upstream_gone.set()
            raise


@pytest.fixture
async def echo(aiohttp_server) -> tuple[Echo, str]:
    e = Echo()
    server = await aiohttp_server(e.app)  # TestServer turns handler_cancellation on
    return e, str(server.make_url("")).rstrip("/")


async def test_generate_stream_logged_with_tokens_and_cold(stack: Stack) -> None:
    body = {"model": "llama3.2:1b", "prompt": "hi", "options": {"num_predict": 6}}
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.post(stack.url + "/api/generate", json=body, headers={"X-Prewarm-User": "alice"}) as r:
                assert r.status == 200
                assert r.headers["X-Prewarm-Emulator"] == "1"
                lines = [json.loads(line) async for line in r.content if line.strip()]
    assert len(lines) == 7 and lines[-1]["done"] is True and lines[-1]["eval_count"] == 6
    rows = await stack.rows()
    assert [(r["model"], r["user_id"], r["stream"], r["status"], r["cold"]) for r in rows] == [
        ("llama3.2:1b", "alice", True, 200, True),
        ("llama3.2:1b", "alice", True, 200, False),
    ]
    first = rows[0]
    assert first["completion_tokens"] == 6 and first["prompt_tokens"] == lines[-1]["prompt_eval_count"]
    assert first["load_ms"] >= 3.0 > rows[1]["load_ms"]  # 3 s load x time_scale 0.001
    assert first["api"] == "ollama" and first["endpoint"] == "/api/generate"
    assert 0 < first["ttft_ms"] <= first["total_ms"]
    assert first["ts_end"] >= first["ts_start"]


async def test_openai_stream_usage_and_body_user(stack: Stack) -> None:
    body = {
        "model": "qwen2.5:0.5b",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 4,
        "user": "bob",
    }
    async with aiohttp.ClientSession() as s:
        async with s.post(stack.url + "/v1/chat/completions", json=body) as r:
            raw = await r.read()
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert raw.rstrip().endswith(b"data: [DONE]")
    (row,) = await stack.rows()
    assert (row["model"], row["user_id"], row["api"], row["stream"]) == ("qwen2.5:0.5b", "bob", "openai", True)
    assert row["completion_tokens"] == 4 and row["prompt_tokens"] > 0


async def test_non_loading_show_is_not_cold_and_unknown_model_error_logged(stack: Stack) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(stack.url + "/api/show", json={"model": "llama3.2:1b"}) as r:
            assert r.status == 200
        assert stack.tracker.is_resident("llama3.2:1b") is False  # metadata only: the hooks never heard of it
        body = {"model": "no-such:1b", "messages": [{"role": "user", "content": "x"}]}
        async with s.post(stack.url + "/api/chat", json=body) as r:
            assert r.status == 404
            assert "error" in await r.json()
    show, missing = await stack.rows()
    assert show["cold"] is None and show["model"] == "llama3.2:1b"
    assert missing["status"] == 404 and "not found" in missing["error"]


async def test_unreachable_upstream_502_in_each_api_shape(aiohttp_server, tmp_path: Path, unused_tcp_port: int) -> None:
    stack = await start_stack(aiohttp_server, f"http://127.0.0.1:{unused_tcp_port}", tmp_path)
    async with aiohttp.ClientSession() as s:
        async with s.post(stack.url + "/api/chat", json={"model": "m", "messages": []}) as r:
            assert r.status == 502
            err = (await r.json())["error"]
            assert isinstance(err, str) and "unreachable" in err
        async with s.post(stack.url + "/v1/chat/completions", json={"model": "m", "messages": []}) as r:
            assert r.status == 502
            err = (await r.json())["error"]
            assert set(err) == {"message", "type", "code"} and err["code"] == "upstream_unreachable"
        async with s.get(stack.url + "/api/tags") as r:
            assert r.status == 502
    rows = await stack.rows()
    assert [(r["model"], r["status"]) for r in rows] == [("m", 502), ("m", 502), (None, 502)]
    assert all("unreachable" in r["error"] for r in rows)


async def test_upstream_timeout_504_and_broken_stream_502(aiohttp_server, echo, tmp_path: Path) -> None:
    _, url = echo
    stack = await start_stack(aiohttp_server, url, tmp_path, request_timeout=0.3)
    async with aiohttp.ClientSession() as s:
        async with s.post(stack.url + "/api/embed", json={"model": "m", "input": "x"}) as r:
            assert r.status == 504 and "in time" in (await r.json())["error"]
        async with s.post(stack.url + "/v1/chat/completions", json={"model": "m", "messages": []}) as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()  # cut short, never presented as a complete stream
    timeout_row, broken_row = await stack.wait_rows("true", 2)
    assert (timeout_row["status"], timeout_row["model"]) == (504, "m")
    assert broken_row["status"] == 502 and broken_row["error"].startswith("upstream stream broken")


async def test_body_over_limit_413(aiohttp_server, echo, tmp_path: Path) -> None:
    _, url = echo
    stack = await start_stack(aiohttp_server, url, tmp_path, max_body_bytes=1000)
    big = {"model": "m", "prompt": "x" * 2000}
    async with aiohttp.ClientSession() as s:
        async with s.post(stack.url + "/api/chat", json=big) as r:
            assert r.status == 413 and "limit" in (await r.json())["error"]
        async with s.post(stack.url + "/v1/completions", json=big) as r:
            assert r.status == 413
            assert (await r.json())["error"]["type"] == "invalid_request_error"

        async def chunks():  # no Content-Length: the limit must hold while reading
            for _ in range(3):
                yield b"x" * 600

        async with s.post(stack.url + "/api/chat", data=chunks()) as r:
            assert r.status == 413
    rows = await stack.rows()
    assert [r["status"] for r in rows] == [413, 413, 413]
    assert all(r["model"] is None for r in rows)


async def test_malformed_json_forwarded_untouched(aiohttp_server, echo, tmp_path: Path) -> None:
    _, url = echo
    stack = await start_stack(aiohttp_server, url, tmp_path)
    raw = b'{"model": "m", "prompt": '
    async with aiohttp.ClientSession() as s:
        async with s.post(stack.url + "/api/chat", data=raw, headers={"Content-Type": "application/json"}) as r:
            got = await r.json()
    assert got["body"].encode("latin-1") == raw
    (row,) = await stack.rows()
    assert row["model"] is None and row["status"] == 200 and "malformed JSON" in row["error"]


async def test_unknown_method_path_query_and_headers_forwarded(aiohttp_server, echo, tmp_path: Path) -> None:
    _, url = echo
    stack = await start_stack(aiohttp_server, url, tmp_path)
    payload = bytes(range(256)) * 1000
    async with aiohttp.ClientSession() as s:
        async with s.request(
            "PROPFIND",
            URL(stack.url + "/some/odd%2Fpath?q=1&x=%2F&q=2", encoded=True),
            data=payload,
            headers={"X-Custom": "v", "Keep-Alive": "timeout=5", "TE": "trailers"},
        ) as r:
            assert r.status == 207
            assert r.headers["X-Upstream"] == "yes"
            got = await r.json()
    assert got["method"] == "PROPFIND"
    assert got["path_qs"] == "/some/odd%2Fpath?q=1&x=%2F&q=2"
    assert got["headers"]["x-custom"] == "v"
    assert "keep-alive" not in got["headers"] and "te" not in got["headers"]
    assert got["headers"]["host"] == url.split("//")[1]
    assert got["body"].encode("latin-1") == payload
    (row,) = await stack.rows()
    assert (row["api"], row["endpoint"], row["status"], row["model"]) == ("other", "/some/odd/path", 207, None)


@pytest.mark.parametrize("handler_cancellation", [True, False])
async def test_client_gone_mid_stream_cancels_upstream_and_logs_499(
    aiohttp_server, echo, tmp_path: Path, handler_cancellation: bool
) -> None:
    e, url = echo
    stack = await start_stack(aiohttp_server, url, tmp_path, cancel=handler_cancellation)
    async with aiohttp.ClientSession() as s:
        r = await s.post(stack.url + "/api/generate", json={"model": "m", "prompt": "p"}, headers={"X-Prewarm-User": "u"})
        assert await r.content.readline() == b'{"response":"x","done":false}\n'
        r.close()
    await asyncio.wait_for(e.upstream_gone.wait(), timeout=10)
    (row,) = await stack.wait_rows("status = 499")
    assert (row["model"], row["user_id"], row["stream"]) == ("m", "u", True)
    assert row["error"] == "client disconnected"
    assert stack.tracker.in_flight == {}


async def test_user_id_sanitised_and_api_key_mapped(aiohttp_server, echo, tmp_path: Path) -> None:
    _, url = echo
    stack = await start_stack(aiohttp_server, url, tmp_path, api_keys={"sk-secret": "carol"})
    async with aiohttp.ClientSession() as s:
        for headers in (
            {"X-Prewarm-User": "ev\til\u200b"},
            {"X-Prewarm-User": "a" * 5000},
            {"Authorization": "Bearer sk-secret"},
            {"Authorization": "Bearer sk-other"},
        ):
            async with s.post(stack.url + "/v1/embeddings", json={"model": "m", "input": "x"}, headers=headers) as r:
                assert r.status == 200
    # A control byte aiohttp's client refuses to send: the proxy must still answer, not crash.
    reader, writer = await asyncio.open_connection(*stack.url.split("//")[1].split(":"))
    writer.write(b"GET /api/tags HTTP/1.1\r\nHost: x\r\nX-Prewarm-User: a\x01b\r\nConnection: close\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] in (b"200", b"400")
    users = [r["user_id"] for r in await stack.rows("endpoint = '/v1/embeddings'")]
    assert users == ["evil", "a" * 256, "carol", None]
    await stack.store.flush()
    _, hits = await stack.store.query("SELECT count(*) FROM requests WHERE list_contains([user_id, error, id], 'sk-secret')")
    assert hits == [(0,)]


class KeepAliveHooks:
    """A prewarmer stand-in: sets keep_alive on every request and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.finished: list[RequestEvent] = []

    def canonical(self, model: str) -> str:
        return model

    def upstream_problem(self) -> str | None:
        return None

    def user_seen(self, user: str) -> None:
        pass

    def is_resident(self, model: str) -> bool | None:
        return model == "warm"

    async def before_forward(self, model: str, body: dict[str, Any], endpoint: str) -> dict[str, Any] | None:
        self.calls.append((model, endpoint))
        return {**body, "keep_alive": -1}

    def upstream_for(self, model: str) -> str | None:
        return None

    def model_servers(self) -> dict[str, tuple[str, int]] | None:
        return None

    def request_started(self, model: str) -> None:
        pass

    def upstream_answered(self, model: str) -> None:
        pass

    def request_finished(self, model: str, event: RequestEvent) -> None:
        self.finished.append(event)


async def test_before_forward_replacement_body(aiohttp_server, echo, tmp_path: Path) -> None:
    _, url = echo
    hooks = KeepAliveHooks()
    stack = await start_stack(aiohttp_server, url, tmp_path, hooks=hooks)
    async with aiohttp.ClientSession() as s:
        async with s.post(stack.url + "/api/chat", json={"model": "warm", "messages": [], "stream": False}) as r:
            got = await r.json()
    assert json.loads(got["body"]) == {"model": "warm", "messages": [], "stream": False, "keep_alive": -1}
    assert int(got["headers"]["content-length"]) == len(got["body"])
    assert hooks.calls == [("warm", "/api/chat")]
    (row,) = await stack.rows()
    assert row["cold"] is False and row["stream"] is False
    assert hooks.finished[0].id == row["id"]


async def test_admin_guard_off_loopback(aiohttp_client, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="admin_token"):
        check_admin_token(Settings(listen="0.0.0.0:11435"))
    settings = Settings(listen="0.0.0.0:11435", admin_token="s3cret", db=str(tmp_path / "x.duckdb"))
    check_admin_token(settings)
    store = Store(settings.db, settings)
    store.open()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="m 1\n")

    guard = Guard(settings)
    app = make_proxy_app(settings, store, idle_tracker(),
                         guard.routes([web.get("/metrics", metrics), *routes(settings, store, guard)]))
    client = await aiohttp_client(app)
    for path in ("/prewarm/health", "/metrics", "/prewarm/anything"):
        assert (await client.get(path)).status == 401
        assert (await client.get(path, headers={"Authorization": "Bearer wrong"})).status == 401
    ok = await client.get("/prewarm/health", headers={"Authorization": "Bearer s3cret"})
    assert ok.status == 200 and (await ok.json())["ok"] is True
    assert (await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})).status == 200
    await client.close()
    await store.close()


@pytest.mark.parametrize("marker", [b"data: [DONE]\n\n", b'{"done":true,"eval_count":2,"eval_duration":7}\n'])
@pytest.mark.parametrize("handler_cancellation", [True, False])
async def test_client_that_hangs_up_after_the_end_marker_was_served(
    aiohttp_server, tmp_path: Path, handler_cancellation: bool, marker: bytes
) -> None:
    """The openai client closes after `data: [DONE]`, before the upstream ends the stream: a 200, not a 499."""
    finished = asyncio.Event()

    async def slow_end(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"data: {\"x\": 1}\n\n" if marker.startswith(b"data") else b'{"done":false}\n')
        await resp.write(marker)
        try:
            await asyncio.sleep(5)  # the closing chunk comes late, as from sse-starlette
        finally:
            finished.set()
        return resp

    up = web.Application()
    up.router.add_post("/{tail:.*}", slow_end)
    server = await aiohttp_server(up)
    stack = await start_stack(aiohttp_server, str(server.make_url("")).rstrip("/"), tmp_path,
                              cancel=handler_cancellation)
    endpoint = "/v1/chat/completions" if marker.startswith(b"data") else "/api/chat"
    async with aiohttp.ClientSession() as s:
        r = await s.post(stack.url + endpoint, json={"model": "m", "stream": True, "messages": []})
        seen = b""
        while marker not in seen:
            seen += await r.content.readany()
        r.close()  # gone before the terminating zero-length chunk
    (row,) = await stack.wait_rows(f"endpoint = '{endpoint}'")
    assert (row["status"], row["error"], row["stream"]) == (200, None, True)


async def test_client_gone_before_the_end_marker_is_still_499(aiohttp_server, echo, tmp_path: Path) -> None:
    """The other side of the rule above: an answer cut short stays a 499."""
    e, url = echo
    stack = await start_stack(aiohttp_server, url, tmp_path)
    async with aiohttp.ClientSession() as s:
        r = await s.post(stack.url + "/api/generate", json={"model": "m", "prompt": "p"})
        await r.content.readline()
        r.close()
    (row,) = await stack.wait_rows("status = 499")
    assert row["error"] == "client disconnected"
