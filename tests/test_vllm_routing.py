"""vLLM upstream: one server per model, /v1 requests routed by model name, sleeping servers woken to make room."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from prewarm.admin import make_service_app
from prewarm.backends import VllmBackend
from prewarm.catalog import Catalog
from prewarm.config import Settings
from prewarm.emulator import make_vllm_app
from prewarm.prewarmer import Prewarmer
from prewarm.records import CatalogEntry
from prewarm.store import Store

GB = 10**9


@pytest.fixture
async def stack(aiohttp_server, aiohttp_client, tmp_path: Path):
    a = await aiohttp_server(make_vllm_app("org/model-a", 8 * GB, 10.0, time_scale=0.001))
    b = await aiohttp_server(make_vllm_app("org/model-b", 6 * GB, 5.0, time_scale=0.001))
    servers = {"org/model-a": str(a.make_url("")), "org/model-b": str(b.make_url(""))}
    catalog = Catalog({m: CatalogEntry(m, s, t) for m, s, t in [("org/model-a", 8 * GB, 10.0), ("org/model-b", 6 * GB, 5.0)]})
    settings = Settings(upstream=servers["org/model-a"], upstream_kind="vllm", vllm_servers=servers,
                        db=str(tmp_path / "p.duckdb"), vram_budget=10 * GB, vram_reserve=0, ps_refresh=0.05,
                        log_flush_interval=0.05)
    store = Store(settings.db, settings)
    store.open()
    pw = Prewarmer(settings, VllmBackend(servers, catalog), store, catalog=catalog)
    await pw.start()
    proxy = await aiohttp_client(make_service_app(settings, store, pw, pw))
    yield proxy, pw, store, (a, b)
    await pw.stop()
    await store.close()


async def _stats(client, server) -> dict:
    async with client.session.get(str(server.make_url("/emulator/stats"))) as r:
        return await r.json()


async def test_requests_go_to_their_models_server_and_the_budget_holds(stack) -> None:
    proxy, pw, store, (a, b) = stack
    # Both servers start awake (14 GB, over the 10 GB budget): put one to sleep, then each request for a
    # sleeping model must wake it, and first put the other to sleep to stay inside the budget.
    await pw.unload_now("org/model-a")
    oai = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="x")
    for model in ["org/model-b", "org/model-a", "org/model-b"]:
        out = await oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert out.model == model
    stream = await oai.chat.completions.create(
        model="org/model-a", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [c async for c in stream]
    assert chunks and all(c.model == "org/model-a" for c in chunks)
    sa, sb = await _stats(proxy, a), await _stats(proxy, b)
    assert sa["requests"] == 2 and sb["requests"] == 2
    await store.flush()
    _, rows = await store.query("SELECT model, upstream, status FROM requests ORDER BY ts_start")
    assert [(m, s) for m, _, s in rows] == [("org/model-b", 200), ("org/model-a", 200), ("org/model-b", 200),
                                           ("org/model-a", 200)]
    assert {m: u for m, u, _ in rows} == {m: url.rstrip("/") for m, url in pw.backend.servers.items()}
    assert sa["peak_vram_used"] + sb["peak_vram_used"] <= 14 * GB
    assert sa["wakes"] >= 1 and sb["sleeps"] >= 1
    assert sum(pw.tracker.resident.values()) <= 10 * GB


async def test_v1_models_lists_every_vllm_server(stack) -> None:
    proxy, _, _, _ = stack
    oai = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="x", max_retries=0)
    models = (await oai.models.list()).data
    assert sorted(m.id for m in models) == ["org/model-a", "org/model-b"]
    assert all(m.owned_by == "vllm" for m in models)  # each server's own card, as it answered
