"""prewarm's `openai` kind in front of a real OpenAI-compatible server: llama.cpp's router, two tiny models.

The emulator proves the proxy against our own idea of the API; this proves it against
a server we did not write. `upstream_kind = "openai"` is for servers that cannot say
what is in memory or unload on request; here llama.cpp's `llama-server` (router
mode, tests/llama_router.py) plays one, reached only through its OpenAI API, so the
adapter is judged by what a client of that API can see. The models are
random-weight GGUFs written at test time (tests/llamacpp_model.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import openai
import pytest
from llama_router import LOOPBACK, Router, start_router
from llamacpp_model import write_tiny_llama

from prewarm.backends import BackendError, OpenAICompatBackend, Unsupported
from prewarm.catalog import Catalog
from prewarm.localproc import PREWARM_CMD, clean_env, free_port, wait_http

MODELS = ("tiny-a", "tiny-b")
PREWARM = PREWARM_CMD


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    """The router on a free loopback port, serving both tiny models."""
    d = tmp_path_factory.mktemp("llamacpp")
    (d / "models").mkdir()
    for i, alias in enumerate(MODELS):
        write_tiny_llama(d / "models" / f"{alias}.gguf", seed=i, name=alias)
    with start_router(d / "models", d / "router.log") as router:
        yield router


@contextmanager
def prewarm_serve(upstream: str, db: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`prewarm serve --upstream-kind openai` in front of `upstream` on a free port: (process, its base URL)."""
    port = free_port()
    # An OpenAI-compatible server reports no sizes: a catalog gives them, as a user would.
    catalog = db.parent / "catalog.csv"
    catalog.write_text("model,size_bytes,load_seconds\n" + "".join(f"{m},300MB,0.1\n" for m in MODELS))
    proc = subprocess.Popen(
        PREWARM + ["serve", "--upstream-kind", "openai", "--upstream", upstream, "--listen", f"127.0.0.1:{port}",
                   "--db", str(db), "--vram-budget", "1GB", "--catalog", str(catalog)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/prewarm/health", proc)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def sse_events(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The data events of one SSE response, in order, as JSON (without the [DONE] sentinel)."""
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    events = []
    with LOOPBACK.open(req, timeout=60) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        for raw in resp:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[len("data: "):]))
    return events


def test_proxy_in_front_of_llama_cpp_server(llama_server: Router, tmp_path: Path) -> None:
    db = tmp_path / "prewarm.duckdb"
    upstream = llama_server.url
    with prewarm_serve(upstream, db) as (serve, base):
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        direct = openai.OpenAI(base_url=upstream + "/v1", api_key="unused", max_retries=0)

        assert sorted(m.id for m in client.models.list()) == sorted(MODELS)

        expected: list[tuple[str, str, int, int]] = []  # model, endpoint, usage the client saw
        for model in MODELS + MODELS[:1]:  # a -> b -> a: the server swaps models twice
            chat = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hello cat"}], max_tokens=6, temperature=0,
                user="alice",
            )
            assert chat.model == model
            assert chat.choices[0].message.content
            expected.append((model, "/v1/chat/completions", chat.usage.prompt_tokens, chat.usage.completion_tokens))

            comp = client.completions.create(model=model, prompt="the dog", max_tokens=5, temperature=0)
            assert comp.choices[0].text
            expected.append((model, "/v1/completions", comp.usage.prompt_tokens, comp.usage.completion_tokens))

        # Streaming: the proxied stream is the server's stream, event for event.
        req = {"messages": [{"role": "user", "content": "red green"}], "max_tokens": 8, "temperature": 0,
               "stream": True}
        for model in MODELS:
            body = dict(req, model=model)
            via_proxy = sse_events(base + "/v1/chat/completions", body)
            from_server = sse_events(upstream + "/v1/chat/completions", body)
            assert len(via_proxy) == len(from_server) > 2
            assert [e["choices"] for e in via_proxy] == [e["choices"] for e in from_server]

        # The official client's streaming, for the text a user would see.
        stream = client.chat.completions.create(
            model=MODELS[1], messages=[{"role": "user", "content": "red green"}], max_tokens=8, temperature=0,
            stream=True,
        )
        text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        same = direct.chat.completions.create(
            model=MODELS[1], messages=[{"role": "user", "content": "red green"}], max_tokens=8, temperature=0,
        )
        assert text == same.choices[0].message.content

        # The server's own error reaches the client as is (the router answers a body it cannot
        # validate with a 400 that names the field).
        with pytest.raises(openai.BadRequestError, match="messages"):
            client.chat.completions.create(model=MODELS[0], messages=None)  # type: ignore[arg-type]

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0, serve.stderr.read() if serve.stderr else ""

    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT model, endpoint, stream, status, prompt_tokens, completion_tokens, user_id, api, upstream, error, cold "
        "FROM requests WHERE endpoint LIKE '/v1/%' AND endpoint <> '/v1/models' ORDER BY ts_start"
    ).fetchall()
    con.close()

    plain = [r for r in rows if not r[2] and r[3] == 200]
    assert [(r[0], r[1], r[4], r[5]) for r in plain] == expected
    for _, endpoint, _, _, _, _, user, api, logged_upstream, _, _ in plain:
        assert user == ("alice" if endpoint == "/v1/chat/completions" else None)
        assert api == "openai" and logged_upstream == upstream
    # An OpenAI-compatible server cannot say what is in memory: no row may claim warm or cold.
    assert all(r[10] is None for r in rows)

    streamed = [r for r in rows if r[2]]
    assert [(r[0], r[3]) for r in streamed] == [(MODELS[0], 200), (MODELS[1], 200), (MODELS[1], 200)]
    # The router sends no usage in a stream unless asked (stream_options.include_usage): none invented.
    assert all(r[4] is None and r[5] is None for r in streamed)

    failed = [r for r in rows if r[3] != 200]
    assert [(r[0], r[3]) for r in failed] == [(MODELS[0], 400)]
    assert "messages" in failed[0][9]


async def test_openai_backend_against_llama_cpp_server(llama_server: Router) -> None:
    """What the OpenAI-compatible adapter can honestly do against a real server, and what it refuses."""
    backend = OpenAICompatBackend(llama_server.url, Catalog({}))
    try:
        assert sorted(await backend.models()) == sorted(MODELS)
        assert backend.resident_known is False
        assert await backend.list_resident() == {}
        llama_server.unload_all()
        for model in reversed(MODELS):  # a load is a one-token completion: the server loads the model for it
            await backend.load(model)
            assert llama_server.statuses()[model] == "loaded"
        sizes = await backend.sizes()  # the catalog's default rule: the server reports no sizes
        assert sorted(sizes) == sorted(MODELS) and all(s > 0 for s in sizes.values())
        assert await backend.reported_vram_total() is None
        with pytest.raises(Unsupported):
            await backend.unload(MODELS[0])
    finally:
        await backend.close()


async def test_openai_backend_refuses_a_model_the_server_does_not_offer(llama_server: Router) -> None:
    backend = OpenAICompatBackend(llama_server.url, Catalog({}))
    try:
        with pytest.raises(BackendError):
            await backend.load("no-such-model")
    finally:
        await backend.close()


def test_admin_load_swaps_the_model_in(llama_server: Router, tmp_path: Path) -> None:
    with prewarm_serve(llama_server.url, tmp_path / "prewarm.duckdb") as (_, base):
        for model in (MODELS[1], MODELS[0]):
            llama_server.unload_all()
            req = urllib.request.Request(f"{base}/prewarm/load/{model}", method="POST")
            with LOOPBACK.open(req, timeout=60) as resp:
                assert json.loads(resp.read())["ok"] is True
            assert llama_server.statuses()[model] == "loaded"
