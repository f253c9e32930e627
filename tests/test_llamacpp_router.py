"""prewarm in front of llama.cpp's own `llama-server` in router mode: the real multi-model upstream.

The router is built from the llama-cpp-python source distribution by
`bench/llama_server.py build` (cached outside the checkout; `.ci/run` builds it
before the tests). It serves three random-weight GGUFs of different sizes from a
models directory, each in a child process it starts and stops through its own API,
so everything prewarm decides here is carried out by a server we did not write:
loads, unloads, the cold flag, and the budget through a burst.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import openai
import pytest
from llama_router import LOOPBACK, Router, llama_server, start_router

from prewarm.backends import BackendError, LlamaCppBackend
from prewarm.catalog import Catalog
from prewarm.localproc import PREWARM_CMD, clean_env, free_port, wait_http

N_MODELS = 3


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    d = tmp_path_factory.mktemp("router")
    llama_server.write_models(d / "models", N_MODELS)
    with start_router(d / "models", d / "router.log") as r:
        yield r


@pytest.fixture()
def clean_router(router: Router) -> Router:
    router.unload_all()
    return router


@contextmanager
def prewarm_serve(upstream: str, db: Path, budget: int) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        PREWARM_CMD + ["serve", "--upstream-kind", "llamacpp", "--upstream", upstream, "--listen", f"127.0.0.1:{port}",
                       "--db", str(db), "--vram-budget", str(budget), "--no-schedule"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_env() | {"PREWARM_PS_REFRESH": "0.2"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/prewarm/health", proc)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        err = proc.stderr.read() if proc.stderr else ""
        assert rc == 0, err


def post(url: str) -> Any:
    req = urllib.request.Request(url, method="POST")
    with LOOPBACK.open(req, timeout=120) as resp:
        return json.loads(resp.read())


async def test_backend_reads_loads_and_unloads_through_the_router(clean_router: Router) -> None:
    r = clean_router
    backend = LlamaCppBackend(r.url, Catalog({}))
    try:
        assert await backend.check() == []  # --models-max 0 and autoload: nothing to warn about
        sizes = await backend.sizes()
        assert sorted(sizes) == sorted(r.models)
        for m in r.models:  # a GGUF file plus its KV cache at the router's context
            assert sizes[m] > (r.models_dir / f"{m}.gguf").stat().st_size
        assert [sizes[m] for m in r.models] == sorted(sizes.values())
        assert await backend.list_resident() == {}

        small = r.models[0]
        await backend.load(small)
        assert r.statuses()[small] == "loaded"  # load returns only once the child is up
        assert set(await backend.list_resident()) == {small}
        await backend.load(small)  # already loaded: nothing to do, no error
        await backend.unload(small)
        assert r.statuses()[small] == "unloaded"
        await backend.unload(small)  # already unloaded: nothing to do
        with pytest.raises(BackendError, match="does not serve"):
            await backend.load("no-such-model")
    finally:
        await backend.close()


async def test_backend_warns_when_the_router_would_evict_on_its_own(router: Router, tmp_path: Path) -> None:
    with start_router(router.models_dir, tmp_path / "r.log", models_max=2) as r:
        backend = LlamaCppBackend(r.url, Catalog({}))
        try:
            notes = await backend.check()
        finally:
            await backend.close()
    assert len(notes) == 1 and "--models-max 2" in notes[0] and "--models-max 0" in notes[0]


def test_without_autoload_prewarm_loads_before_it_forwards(router: Router, tmp_path: Path) -> None:
    """A router started with --no-models-autoload refuses a request for an unloaded model; prewarm, told so by
    /props at start, loads the model first, so the client never sees the refusal."""
    with start_router(router.models_dir, tmp_path / "r.log", extra=("--no-models-autoload",)) as r:
        small = r.models[0]
        with prewarm_serve(r.url, tmp_path / "p.duckdb", budget=10**10) as base:
            client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
            reply = client.chat.completions.create(model=small, messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=3, temperature=0)
            assert reply.choices[0].message.content
            assert r.statuses()[small] == "loaded"
        direct = openai.OpenAI(base_url=r.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError):  # what the client would have got without prewarm
            direct.chat.completions.create(model=r.models[1], messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=3)


def test_openai_client_through_prewarm_and_the_cold_flag(clean_router: Router, tmp_path: Path) -> None:
    r = clean_router
    db = tmp_path / "p.duckdb"
    small, mid = r.models[0], r.models[1]
    with prewarm_serve(r.url, db, budget=10**10) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        direct = openai.OpenAI(base_url=r.url + "/v1", api_key="unused", max_retries=0)
        ask = dict(messages=[{"role": "user", "content": "hello cat"}], max_tokens=6, temperature=0)
        first = client.chat.completions.create(model=small, **ask)  # type: ignore[call-overload]
        assert first.choices[0].message.content
        again = client.chat.completions.create(model=small, **ask)  # type: ignore[call-overload]
        assert again.choices[0].message.content == first.choices[0].message.content

        stream = client.chat.completions.create(model=small, stream=True, **ask)  # type: ignore[call-overload]
        text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        plain = direct.chat.completions.create(model=small, **ask)  # type: ignore[call-overload]
        assert text == plain.choices[0].message.content

        # Anthropic's Messages API and OpenAI's Responses API, which the router answers too: logged with
        # their model and user like any other request.
        for path, body in (("/v1/messages", {"model": small, "max_tokens": 4, "metadata": {"user_id": "ann"},
                                             "messages": [{"role": "user", "content": "hi"}]}),
                           ("/v1/responses", {"model": small, "input": "hi", "max_output_tokens": 4, "user": "bo"})):
            req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
            with LOOPBACK.open(req, timeout=60) as resp:
                assert resp.status == 200 and json.loads(resp.read())

        # /prewarm/load and /prewarm/unload are the router's own loads and unloads.
        assert post(f"{base}/prewarm/load/{mid}")["ok"] is True
        assert r.statuses()[mid] == "loaded"
        assert post(f"{base}/prewarm/unload/{mid}")["ok"] is True
        assert r.statuses()[mid] == "unloaded"

    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT model, stream, status, cold FROM requests WHERE endpoint = '/v1/chat/completions' "
                       "ORDER BY ts_start").fetchall()
    actions = con.execute("SELECT action, model, ok FROM prewarm_actions ORDER BY ts").fetchall()
    other = con.execute("SELECT endpoint, model, user_id, status, cold, prompt_tokens > 0 FROM requests "
                        "WHERE endpoint IN ('/v1/messages', '/v1/responses') ORDER BY ts_start").fetchall()
    con.close()
    assert rows == [(small, False, 200, True), (small, False, 200, False), (small, True, 200, False)]
    assert ("load", mid, True) in actions and ("unload", mid, True) in actions
    assert other == [("/v1/messages", small, "ann", 200, False, True), ("/v1/responses", small, "bo", 200, False, True)]


def test_a_burst_over_every_model_never_holds_more_than_the_budget(clean_router: Router, tmp_path: Path) -> None:
    r = clean_router
    import asyncio

    async def sizes() -> dict[str, int]:
        backend = LlamaCppBackend(r.url, Catalog({}))
        try:
            return await backend.sizes()
        finally:
            await backend.close()

    size = asyncio.run(sizes())
    budget = size[r.models[-1]] + size[r.models[-2]] + 1  # the two largest fit; all three never do
    assert sum(size.values()) > budget
    peaks: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peaks.append(sum(size[m] for m in r.loaded()))
            time.sleep(0.02)

    db = tmp_path / "p.duckdb"
    with prewarm_serve(r.url, db, budget=budget) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
        sampler = threading.Thread(target=sample)
        sampler.start()
        order = [r.models[i % N_MODELS] for i in (0, 2, 1, 0, 1, 2, 2, 0, 1, 0, 2, 1)]
        try:
            with ThreadPoolExecutor(4) as pool:
                replies = list(pool.map(lambda m: client.chat.completions.create(
                    model=m, messages=[{"role": "user", "content": "one two"}], max_tokens=3, temperature=0,
                ), order))
        finally:
            stop.set()
            sampler.join()
    assert all(rep.choices[0].message.content for rep in replies)
    assert len(peaks) > 10
    assert max(peaks) <= budget, f"the router held {max(peaks)} bytes under a {budget}-byte budget"
    con = duckdb.connect(str(db), read_only=True)
    unloads = con.execute("SELECT count(*) FROM prewarm_actions WHERE action = 'unload' AND ok").fetchone()
    colds = con.execute("SELECT count(*) FROM requests WHERE cold").fetchone()
    con.close()
    assert unloads is not None and colds is not None
    # The burst did make prewarm evict (the budget was tight), and the router never evicted on its own.
    assert unloads[0] >= 1 and colds[0] >= 2
