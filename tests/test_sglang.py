"""SGLang upstream, against the SGLang stand-in (prewarm/emulator/sglang.py), not a real SGLang server.

The stand-in keeps SGLang 0.5.23's request and response shapes and its refusal
rules, which are crashes: a release while busy, a second release, a resume of
memory not released, a request to a released server. So every test here also
checks that prewarm never made the stand-in crash.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import openai
import pytest

from prewarm.admin import make_service_app
from prewarm.backends import BackendError
from prewarm.backends.sglang import SglangBackend, record_path
from prewarm.catalog import Catalog
from prewarm.config import ConfigError, Settings, load_settings
from prewarm.emulator import make_sglang_app
from prewarm.prewarmer import Prewarmer
from prewarm.records import CatalogEntry
from prewarm.store import Store

GB = 10**9
A, B = "org/model-a", "org/model-b"


async def _post(client, url: str, body: object = None) -> tuple[int, object]:
    async with client.post(url, json=body) as r:
        text = await r.text()
        return r.status, json.loads(text) if text else None


async def _stats(client, server) -> dict:
    async with client.session.get(str(server.make_url("/emulator/stats"))) as r:
        return await r.json()


# ---------------------------------------------------------------- the stand-in's own rules


@pytest.fixture
async def standin(aiohttp_client):
    return await aiohttp_client(make_sglang_app(A, 8 * GB, 10.0, time_scale=0.001, tokens_per_second=5000))


async def test_standin_release_resume_and_its_shapes(standin) -> None:
    async with standin.get("/server_info") as r:
        info = await r.json()
    assert info["enable_memory_saver"] is True and info["enable_weights_cpu_backup"] is False
    assert info["model_path"] == A
    async with standin.get("/health") as r:
        assert r.status == 200 and await r.text() == ""
    assert await _post(standin, "/release_memory_occupation", {}) == (200, None)
    assert (await _stats(standin, standin.server))["vram_used"] == 0
    assert await _post(standin, "/resume_memory_occupation", {"tags": ["weights", "kv_cache", "cuda_graph"]}) == (
        200, None)
    # Resumed without a CPU copy: the weights are uninitialised until read again from disk.
    status, _ = await _post(standin, "/v1/completions", {"model": A, "prompt": "hi", "max_tokens": 2})
    assert status == 503
    status, body = await _post(standin, "/update_weights_from_disk", {"model_path": A})
    assert status == 200 and body["success"] is True
    status, body = await _post(standin, "/v1/completions", {"model": A, "prompt": "hi", "max_tokens": 2})
    assert status == 200 and body["choices"][0]["text"]


@pytest.mark.parametrize("mistake", ["resume-not-released", "release-twice", "request-while-released"])
async def test_standin_crashes_where_sglang_does(standin, mistake: str) -> None:
    if mistake == "resume-not-released":
        status, _ = await _post(standin, "/resume_memory_occupation", {})
    else:
        await _post(standin, "/release_memory_occupation", {})
        if mistake == "release-twice":
            status, _ = await _post(standin, "/release_memory_occupation", {})
        else:
            status, _ = await _post(standin, "/v1/completions", {"model": A, "prompt": "hi"})
    assert status == 500
    async with standin.get("/health") as r:
        assert r.status == 503  # the real server is gone; the stand-in stays down too


async def test_standin_crashes_on_a_release_while_a_request_runs(aiohttp_client) -> None:
    slow = await aiohttp_client(make_sglang_app(A, 8 * GB, 1.0, time_scale=0.001, tokens_per_second=20))
    running = asyncio.create_task(_post(slow, "/v1/completions", {"model": A, "prompt": "hi", "max_tokens": 10}))
    await asyncio.sleep(0.1)
    status, _ = await _post(slow, "/release_memory_occupation", {})
    assert status == 500
    await running


# ---------------------------------------------------------------- the adapter


@pytest.fixture
async def pair(aiohttp_server, request):
    cpu_backup = getattr(request, "param", False)
    a = await aiohttp_server(make_sglang_app(A, 8 * GB, 10.0, time_scale=0.001, tokens_per_second=5000,
                                             cpu_backup=cpu_backup))
    b = await aiohttp_server(make_sglang_app(B, 6 * GB, 5.0, time_scale=0.001, tokens_per_second=5000,
                                             cpu_backup=cpu_backup))
    catalog = Catalog({m: CatalogEntry(m, s, t) for m, s, t in [(A, 8 * GB, 10.0), (B, 6 * GB, 5.0)]})
    return {A: str(a.make_url("")), B: str(b.make_url(""))}, catalog, (a, b)


@pytest.mark.parametrize("pair", [False, True], indirect=True, ids=["reload-from-disk", "cpu-backup"])
async def test_backend_release_and_resume_then_serves(pair, tmp_path: Path) -> None:
    servers, catalog, (a, _) = pair
    backend = SglangBackend(servers, catalog, tmp_path / "p.sglang.json")
    try:
        assert await backend.check() == []
        assert await backend.list_resident() == {A: 8 * GB, B: 6 * GB}
        await backend.unload(A)
        await backend.unload(A)  # already released: not sent again (a second release would crash SGLang)
        assert await backend.list_resident() == {B: 6 * GB}
        await backend.load(A)
        await backend.load(A)  # already resumed: nothing sent
        assert set(await backend.list_resident()) == {A, B}
        out = await backend.http.json("POST", f"{backend.route_for(A)}/v1/completions", "complete",
                                      json={"model": A, "prompt": "hello", "max_tokens": 3})
        assert out["choices"][0]["text"]
        st = await backend.http.json("GET", f"{backend.route_for(A)}/emulator/stats", "stats")
        cpu_backup = st["weight_loads"] == 0
        assert st["crashed"] is None and st["releases"] == 1 and st["resumes"] == 1
        assert cpu_backup == (await backend.server_info(A))["enable_weights_cpu_backup"]
    finally:
        await backend.close()


async def test_backend_remembers_what_it_released_across_a_restart(pair, tmp_path: Path) -> None:
    servers, catalog, _ = pair
    record = tmp_path / "p.sglang.json"
    first = SglangBackend(servers, catalog, record)
    try:
        await first.unload(B)
    finally:
        await first.close()
    second = SglangBackend(servers, catalog, record)  # a restarted serve: SGLang itself cannot tell it
    try:
        assert await second.list_resident() == {A: 8 * GB}
        await second.load(B)
        assert set(await second.list_resident()) == {A, B}
        assert json.loads(record.read_text()) == {"released": []}
    finally:
        await second.close()


async def test_backend_warns_about_a_server_without_the_memory_saver(aiohttp_server, tmp_path: Path) -> None:
    plain = await aiohttp_server(make_sglang_app(A, 8 * GB, 1.0, time_scale=0.001, memory_saver=False))
    backend = SglangBackend({A: str(plain.make_url(""))}, Catalog({}), None)
    try:
        notes = await backend.check()
    finally:
        await backend.close()
    assert len(notes) == 1 and "--enable-memory-saver" in notes[0]


def test_settings_for_sglang(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('upstream_kind = "sglang"\n[sglang.servers]\n"org/m" = "http://127.0.0.1:30000"\n')
    s = load_settings(cfg, environ={})
    assert s.sglang_servers == {"org/m": "http://127.0.0.1:30000"}
    assert record_path("data/prewarm.duckdb") == Path("data/prewarm.sglang.json")
    cfg.write_text('upstream_kind = "sglang"\n')
    with pytest.raises(ConfigError, match=r"\[sglang.servers\]"):
        load_settings(cfg, environ={})
    cfg.write_text('upstream_kind = "sglang"\n[sglang.servers]\n"org/m" = "localhost:30000"\n')
    with pytest.raises(ConfigError, match="sglang.servers"):
        load_settings(cfg, environ={})
    with pytest.raises(BackendError, match="sglang.servers"):
        SglangBackend({}, Catalog({}))


# ---------------------------------------------------------------- through the proxy


@pytest.fixture
async def stack(pair, aiohttp_client, tmp_path: Path):
    servers, catalog, ab = pair
    settings = Settings(upstream=servers[A], upstream_kind="sglang", sglang_servers=servers,
                        db=str(tmp_path / "p.duckdb"), vram_budget=10 * GB, vram_reserve=0, ps_refresh=0.05,
                        log_flush_interval=0.05)
    store = Store(settings.db, settings)
    store.open()
    pw = Prewarmer(settings, SglangBackend(servers, catalog, record_path(settings.db)), store, catalog=catalog)
    await pw.start()
    proxy = await aiohttp_client(make_service_app(settings, store, pw, pw))
    yield proxy, pw, store, ab
    await pw.stop()
    await store.close()


async def test_requests_resume_their_server_and_the_budget_holds(stack) -> None:
    proxy, pw, store, (a, b) = stack
    # Both servers start holding their memory (14 GB, over the 10 GB budget): release one; from then on each
    # request for a released model must first release the other, then resume its own.
    await pw.unload_now(A)
    oai = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="x", max_retries=0)
    for model in [B, A, B, A]:
        out = await oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert out.model == model
    # A burst on both at once: prewarm must never release a server while one of its requests runs.
    burst = [oai.chat.completions.create(model=m, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
             for m in [A, B, B, A, A, B]]
    assert all(r.choices[0].message.content for r in await asyncio.gather(*burst))
    sa, sb = await _stats(proxy, a), await _stats(proxy, b)
    assert sa["crashed"] is None and sb["crashed"] is None
    assert sa["peak_vram_used"] + sb["peak_vram_used"] <= 14 * GB
    assert sa["resumes"] >= 2 and sb["releases"] >= 2
    assert sum(pw.tracker.resident.values()) <= 10 * GB
    await store.flush()
    _, rows = await store.query("SELECT model, status, cold FROM requests ORDER BY ts_start LIMIT 4")
    assert rows == [(B, 200, False), (A, 200, True), (B, 200, True), (A, 200, True)]


def test_emulate_serves_an_sglang_standin_from_the_catalog() -> None:
    from argparse import Namespace

    from prewarm.emulator.main import build_app
    from prewarm.emulator.sglang import ENGINE_KEY
    from prewarm.errors import CommandError

    args = Namespace(catalog=None, time_scale=0.0, tokens_per_second=1000.0, vram="8GB", vllm_model=None,
                     sglang_model="llama3.1:8b", sglang_cpu_backup=True)
    app, what = build_app(args)
    assert "SGLang stand-in" in what and app[ENGINE_KEY].cpu_backup is True
    with pytest.raises(CommandError, match="one of them"):
        build_app(Namespace(**{**vars(args), "vllm_model": "llama3.1:8b"}))


async def test_model_lists_name_every_configured_server(stack) -> None:
    proxy, pw, store, _ = stack
    oai = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="x", max_retries=0)
    assert sorted(m.id for m in (await oai.models.list()).data) == [A, B]
    async with proxy.get("/api/tags", headers={"X-Prewarm-User": "ann"}) as r:
        tags = (await r.json())["models"]
    assert [(t["name"], t["size"]) for t in tags] == [(A, 8 * GB), (B, 6 * GB)]
    await store.flush()
    _, rows = await store.query("SELECT endpoint, status, upstream, user_id FROM requests ORDER BY ts_start")
    assert rows == [("/v1/models", 200, "prewarm", None), ("/api/tags", 200, "prewarm", "ann")]
