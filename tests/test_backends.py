"""Backends against the emulators (Ollama API and vLLM sleep mode), in-process on loopback."""

from __future__ import annotations

import pandas as pd
import pytest

from prewarm.backends import (
    BackendError,
    OllamaBackend,
    OpenAICompatBackend,
    Unsupported,
    VllmBackend,
    canonical_name,
    catalog_rows,
    estimate_size,
    kv_cache_bytes,
    load_ms_p50,
    runner_options,
)
from prewarm.catalog import Catalog, load_catalog, sample_catalog_path
from prewarm.emulator import make_app, make_vllm_app
from prewarm.records import CatalogEntry

GB = 10**9


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(sample_catalog_path())


@pytest.fixture
async def ollama(aiohttp_server, catalog):
    server = await aiohttp_server(make_app(catalog, 24 * GB, time_scale=0.001))
    backend = OllamaBackend(str(server.make_url("")), catalog)
    yield backend, server
    await backend.close()


async def stats(backend: OllamaBackend) -> dict:
    return await backend.http.json("GET", f"{backend.base_url}/emulator/stats", "stats")


async def test_ollama_load_list_unload_roundtrip(ollama):
    backend, _ = ollama
    assert await backend.list_resident() == {}
    await backend.load("llama3.1:8b", keep_alive="-1")
    resident = await backend.list_resident()
    assert resident == {"llama3.1:8b": 6_200_000_000}
    st = await stats(backend)
    assert st["resident"][0]["expires_in_s"] is None  # keep_alive -1: held until told otherwise
    await backend.unload("llama3.1:8b")
    assert await backend.list_resident() == {}
    assert (await stats(backend))["unloads"] == 1


async def test_ollama_load_uses_traffic_runner_options_so_no_reload(ollama):
    backend, _ = ollama
    backend.load_options["qwen2.5:7b"] = {"num_ctx": 8192}
    await backend.load("qwen2.5:7b")
    # a client request with the same num_ctx finds the runner as loaded: no reload
    data = await backend.http.json(
        "POST", f"{backend.base_url}/api/generate", "gen",
        json={"model": "qwen2.5:7b", "prompt": "hi", "stream": False, "options": {"num_ctx": 8192}},
    )
    assert data["done"]
    st = await stats(backend)
    assert st["reloads"] == 0 and st["loads"] == 1
    assert st["resident"][0]["num_ctx"] == 8192


async def test_ollama_sizes_ps_for_resident_estimate_for_others(ollama, catalog):
    backend, _ = ollama
    await backend.load("mistral:7b")
    sizes = await backend.sizes()
    assert sizes["mistral:7b"] == 5_100_000_000
    assert backend.size_source["mistral:7b"].startswith("upstream /api/ps")
    # the emulator's file + KV at its default 4096 context is the catalog size: the estimate must recover it
    assert sizes["llama3.1:8b"] == 6_200_000_000
    assert "num_ctx=4096" in backend.size_source["llama3.1:8b"]
    # a larger context used by traffic grows the estimate by the KV cache: 2*32*8*128*2 bytes per token (8B shape)
    backend.load_options["llama3.1:8b"] = {"num_ctx": 8192}
    bigger = await backend.sizes()
    assert bigger["llama3.1:8b"] == 6_200_000_000 + 2 * 32 * 8 * 128 * 2 * 4096


async def test_ollama_reported_total_is_the_emulators_vram(ollama):
    backend, _ = ollama
    assert await backend.reported_vram_total() == 24 * GB


async def test_ollama_unknown_model_error_is_clear(ollama):
    backend, _ = ollama
    with pytest.raises(BackendError, match="load no-such:model"):
        await backend.load("no-such:model")


async def test_unreachable_upstream_is_a_backend_error(closing):
    backend = OllamaBackend("http://127.0.0.1:9", timeout_s=2)
    closing(backend)
    with pytest.raises(BackendError, match="list resident models"):
        await backend.list_resident()


def test_names_and_runner_options():
    assert canonical_name("mistral") == "mistral:latest"
    assert canonical_name("library/mistral:7b") == "library/mistral:7b"
    assert canonical_name("host:5000/ns/model") == "host:5000/ns/model:latest"
    assert runner_options({"num_ctx": 8192, "temperature": 0.2}) == {"num_ctx": 8192}
    assert runner_options(None) == {}


def test_kv_cache_estimate_matches_ollamas_formula():
    info = {
        "general.architecture": "llama",
        "llama.block_count": 32,
        "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 8,
        "llama.embedding_length": 4096,
    }
    assert kv_cache_bytes(info, 4096) == 2 * 32 * 8 * 128 * 4096 * 2 == 536_870_912
    assert estimate_size(4_900_000_000, info, 2048) == 4_900_000_000 + 268_435_456
    assert kv_cache_bytes({"general.architecture": "bert"}, 4096) is None
    assert kv_cache_bytes({}, 4096) is None
    with_key_len = dict(info, **{"llama.attention.key_length": 64})
    assert kv_cache_bytes(with_key_len, 1) == 2 * 32 * 8 * 64 * 2


def test_catalog_rows_catalog_wins_then_measured_then_default_rule():
    cat = Catalog({"a:1b": CatalogEntry("a:1b", 1_000, 2.0)}, source="cat.csv")
    measured = load_ms_p50(pd.DataFrame({"model": ["b:7b", "a:1b"], "load_ms_p50": [900.0, 5.0]}))
    rows = {r["model"]: r for r in catalog_rows({"a:1b": 7, "b:7b": 5_000}, {"b:7b": "upstream /api/ps"}, measured, cat)}
    assert rows["a:1b"]["size_bytes"] == 1_000 and rows["a:1b"]["load_ms_p50"] == 2000.0
    assert rows["a:1b"]["source"] == "catalog cat.csv"
    assert rows["b:7b"]["size_bytes"] == 5_000 and rows["b:7b"]["load_ms_p50"] == 900.0
    assert "measured" in rows["b:7b"]["source"]
    assert load_ms_p50(None) == {}


# ---------------------------------------------------------------- vLLM


@pytest.fixture
async def vllm_pair(aiohttp_server):
    a = await aiohttp_server(make_vllm_app("org/model-a", 8 * GB, 10.0, time_scale=0.001))
    b = await aiohttp_server(make_vllm_app("org/model-b", 4 * GB, 5.0, time_scale=0.001))
    cat = Catalog({"org/model-a": CatalogEntry("org/model-a", 8 * GB, 10.0),
                   "org/model-b": CatalogEntry("org/model-b", 4 * GB, 5.0)})
    servers = {"org/model-a": str(a.make_url("")), "org/model-b": str(b.make_url(""))}
    yield servers, cat


@pytest.fixture
async def closing():
    """Backends made in a test are closed even when it fails, so no session leaks into the next one."""
    made = []
    yield made.append
    for b in made:
        await b.close()


@pytest.mark.parametrize("level", [1, 2])
async def test_vllm_sleep_and_wake_at_each_level_then_serves(vllm_pair, closing, level):
    servers, cat = vllm_pair
    backend = VllmBackend(servers, cat, sleep_level=level)
    closing(backend)
    assert await backend.list_resident() == {"org/model-a": 8 * GB, "org/model-b": 4 * GB}
    await backend.unload("org/model-a")
    assert await backend.list_resident() == {"org/model-b": 4 * GB}
    await backend.load("org/model-a")
    assert "org/model-a" in await backend.list_resident()
    url = backend.route_for("org/model-a")
    # the emulator answers 503 if a level-2 wake skipped reload_weights: a completion proves the sequence
    out = await backend.http.json(
        "POST", f"{url}/v1/completions", "complete",
        json={"model": "org/model-a", "prompt": "hello", "max_tokens": 3},
    )
    assert out["choices"][0]["text"]
    st = await backend.http.json("GET", f"{url}/emulator/stats", "stats")
    assert st["weight_reloads"] == (1 if level == 2 else 0)


async def test_vllm_routes_by_model_and_rejects_unknown(vllm_pair, closing):
    servers, cat = vllm_pair
    backend = VllmBackend(servers, cat)
    closing(backend)
    assert backend.route_for("org/model-b") == servers["org/model-b"].rstrip("/")
    with pytest.raises(BackendError, match="no vLLM server configured"):
        backend.route_for("other")
    assert await backend.sizes() == {"org/model-a": 8 * GB, "org/model-b": 4 * GB}
    with pytest.raises(BackendError, match="vllm.servers"):
        VllmBackend({}, cat)


async def test_vllm_dead_server_counts_as_not_resident(vllm_pair, closing):
    servers, cat = vllm_pair
    backend = VllmBackend(dict(servers, **{"org/gone": "http://127.0.0.1:9"}), cat)
    closing(backend)
    assert "org/gone" not in await backend.list_resident()


# ---------------------------------------------------------------- OpenAI-compatible (emulator's /v1 here)


async def test_openai_compat_lists_loads_and_says_it_cannot_unload(ollama, catalog, closing):
    _, server = ollama
    backend = OpenAICompatBackend(str(server.make_url("")), catalog)
    closing(backend)
    names = await backend.models()
    assert "llama3.1:8b" in names
    await backend.load("llama3.2:1b")
    assert await backend.list_resident() == {}  # the OpenAI API cannot tell; documented
    with pytest.raises(Unsupported):
        await backend.unload("llama3.2:1b")


def test_a_kind_registered_outside_prewarm_is_a_choice_of_the_cli_and_the_config(tmp_path) -> None:
    """Adding an upstream kind touches nothing outside backends/: here one is registered by the test alone."""
    from prewarm.backends import registry
    from prewarm.backends.ollama import OllamaBackend
    from prewarm.cli import build_parser
    from prewarm.config import ConfigError, load_settings

    class Stand(OllamaBackend):
        kind = "stand-in"

    registry.register(registry.BackendKind("stand-in", "a test's own kind",
                                           lambda settings, catalog: Stand(settings.upstream, catalog)))
    try:
        settings = load_settings(None, {"upstream_kind": "stand-in", "db": str(tmp_path / "x.duckdb")}, environ={})
        backend = registry.make_backend(settings, Catalog({}))
        assert isinstance(backend, Stand) and backend.sets_keep_alive
        args = build_parser().parse_args(["serve", "--upstream-kind", "stand-in"])
        assert args.upstream_kind == "stand-in"
    finally:
        registry._KINDS.pop("stand-in")
    with pytest.raises(ConfigError, match="one of ollama, vllm, sglang, llamacpp, openai"):
        load_settings(None, {"upstream_kind": "stand-in"}, environ={})
