"""The Ollama emulator: response shapes, keep_alive, load/unload requests, eviction, one load at a time."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime

import pytest

from prewarm.catalog import load_catalog
from prewarm.emulator import engine_of, make_app, text
from prewarm.emulator.generation import parse_keep_alive
from prewarm.emulator.modelinfo import DEFAULT_NUM_CTX
from prewarm.emulator.runners import BadRequest, runner_options

GB = 10**9
LOAD_S = 1.0
SCALE = 0.01
CATALOG = f"""model,size_bytes,load_seconds
alpha:1b,{4 * GB},{LOAD_S}
beta:1b,{4 * GB},{LOAD_S}
gamma:1b,{4 * GB},{LOAD_S}
huge:70b,{30 * GB},{LOAD_S}
tiny-embed:latest,{GB // 2},{LOAD_S}
"""


@pytest.fixture
def catalog(tmp_path):
    p = tmp_path / "catalog.csv"
    p.write_text(CATALOG)
    return load_catalog(p)


@pytest.fixture
def app(catalog):
    return make_app(catalog, 10 * GB, time_scale=SCALE, tokens_per_second=5000, busy_wait_s=0.3)


@pytest.fixture
async def client(aiohttp_client, app):
    return await aiohttp_client(app)


async def ndjson(resp) -> list[dict]:
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in (await resp.text()).splitlines() if line.strip()]


async def sse(resp) -> list:
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = [line[len("data: ") :] for line in (await resp.text()).splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


async def stats(client) -> dict:
    return await (await client.get("/emulator/stats")).json()


async def ps_names(client) -> list[str]:
    return [m["name"] for m in (await (await client.get("/api/ps")).json())["models"]]


METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


# --- it says it is an emulator ---------------------------------------------------------------


async def test_version_and_header_on_every_response(client):
    r = await client.get("/api/version")
    body = await r.json()
    assert body["version"].endswith("-prewarm-emulator") and body["emulator"] is True
    for resp in (
        r,
        await client.get("/api/tags"),
        await client.get("/no/such/path"),
        await client.post("/api/generate", json={"model": "nope"}),
        await client.post("/api/generate", json={"model": "alpha:1b", "prompt": "hi"}),
    ):
        assert resp.headers["X-Prewarm-Emulator"] == "1"
        await resp.read()


# --- native API shapes ---------------------------------------------------------------------------


async def test_generate_stream_shape_and_deterministic_text(client):
    prompt = "why is the sky blue"
    chunks = await ndjson(await client.post("/api/generate", json={"model": "alpha:1b", "prompt": prompt}))
    *parts, final = chunks
    for c in parts:
        assert set(c) == {"model", "created_at", "response", "done"} and c["done"] is False
        assert c["model"] == "alpha:1b"
        datetime.fromisoformat(c["created_at"].replace("Z", "+00:00"))
    assert final["done"] is True and final["done_reason"] == "stop" and final["response"] == ""
    for key in METRICS:
        assert isinstance(final[key], int), key
    assert isinstance(final["context"], list) and final["context"]
    expected = "".join(text.reply_tokens("alpha:1b", prompt))
    assert "".join(c["response"] for c in parts) == expected
    assert final["eval_count"] == len(parts) == len(expected.split())
    assert final["prompt_eval_count"] == 5
    # a cold request waited for the whole (scaled) load
    assert final["load_duration"] >= 0.9 * LOAD_S * SCALE * 1e9
    assert final["total_duration"] >= final["load_duration"]


async def test_generate_non_stream_and_num_predict(client):
    r = await client.post(
        "/api/generate",
        json={"model": "alpha:1b", "prompt": "a b c", "stream": False, "options": {"num_predict": 7, "seed": 3}},
    )
    body = await r.json()
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
    assert body["done"] is True and body["done_reason"] == "length" and body["eval_count"] == 7
    assert body["response"] == "".join(text.reply_tokens("alpha:1b", "a b c", 3, 7))
    assert set(METRICS) <= set(body) and body["context"]


async def test_name_without_tag_means_latest(client):
    r = await client.post("/api/generate", json={"model": "alpha", "prompt": "x"})
    assert r.status == 404 and "alpha" in (await r.json())["error"]
    r = await client.post("/api/embed", json={"model": "tiny-embed", "input": "x"})
    assert r.status == 200 and (await r.json())["model"] == "tiny-embed"
    assert await ps_names(client) == ["tiny-embed:latest"]


async def test_chat_stream_and_non_stream(client):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    chunks = await ndjson(await client.post("/api/chat", json={"model": "beta:1b", "messages": msgs}))
    *parts, final = chunks
    assert all(c["message"]["role"] == "assistant" and c["done"] is False for c in parts)
    assert final["done"] is True and final["done_reason"] == "stop" and final["message"]["content"] == ""
    assert set(METRICS) <= set(final) and "context" not in final
    assert final["prompt_eval_count"] == 4
    streamed = "".join(c["message"]["content"] for c in parts)
    r = await client.post("/api/chat", json={"model": "beta:1b", "messages": msgs, "stream": False})
    body = await r.json()
    assert body["message"] == {"role": "assistant", "content": streamed}
    assert body["done"] is True and body["eval_count"] == len(parts)
    assert (await stats(client))["loads"] == 1


async def test_embed_and_legacy_embeddings(client):
    r = await client.post("/api/embed", json={"model": "tiny-embed", "input": ["one two", "three"]})
    body = await r.json()
    assert r.status == 200 and body["model"] == "tiny-embed"
    assert len(body["embeddings"]) == 2 and all(len(v) == text.EMBEDDING_DIM for v in body["embeddings"])
    assert math.isclose(sum(x * x for x in body["embeddings"][0]), 1.0, rel_tol=1e-6)
    assert body["prompt_eval_count"] == 3 and body["load_duration"] > 0
    again = await (await client.post("/api/embed", json={"model": "tiny-embed", "input": "one two"})).json()
    assert again["embeddings"][0] == body["embeddings"][0]
    legacy = await (await client.post("/api/embeddings", json={"model": "tiny-embed", "prompt": "one two"})).json()
    assert set(legacy) == {"embedding"} and len(legacy["embedding"]) == text.EMBEDDING_DIM
    assert not math.isclose(sum(x * x for x in legacy["embedding"]), 1.0, rel_tol=1e-3)


async def test_embedding_model_cannot_generate(client):
    r = await client.post("/api/generate", json={"model": "tiny-embed", "prompt": "hi"})
    assert r.status == 400 and "does not support generate" in (await r.json())["error"]


async def test_tags_show_and_kv_estimate_agree(client, catalog):
    tags = (await (await client.get("/api/tags")).json())["models"]
    assert {m["name"] for m in tags} == {"alpha:1b", "beta:1b", "gamma:1b", "huge:70b", "tiny-embed:latest"}
    m = next(m for m in tags if m["name"] == "alpha:1b")
    assert set(m) == {"name", "model", "modified_at", "size", "digest", "details"} and len(m["digest"]) == 64
    assert set(m["details"]) == {"parent_model", "format", "family", "families", "parameter_size", "quantization_level"}
    show = await (await client.post("/api/show", json={"model": "alpha:1b"})).json()
    info = show["model_info"]
    head_dim = info["llama.embedding_length"] // info["llama.attention.head_count"]
    kv = 2 * info["llama.block_count"] * info["llama.attention.head_count_kv"] * head_dim * DEFAULT_NUM_CTX * 2
    # Ollama's prediction from the file size and the architecture gives the catalog size back
    assert m["size"] + kv == catalog.get("alpha:1b").size_bytes
    assert show["details"]["parameter_size"] == "1.0B"


async def test_ps_shape(client):
    await (await client.post("/api/generate", json={"model": "alpha:1b", "keep_alive": "10m"})).read()
    ps = (await (await client.get("/api/ps")).json())["models"]
    assert len(ps) == 1
    m = ps[0]
    assert set(m) == {"name", "model", "size", "digest", "details", "expires_at", "size_vram", "context_length"}
    assert m["size"] == m["size_vram"] == 4 * GB and m["context_length"] == DEFAULT_NUM_CTX
    left = (datetime.fromisoformat(m["expires_at"]) - datetime.now().astimezone()).total_seconds()
    assert 500 < left <= 600


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,body",
    [
        ("/api/generate", {"model": "missing:7b", "prompt": "x"}),
        ("/api/chat", {"model": "missing:7b", "messages": [{"role": "user", "content": "x"}]}),
        ("/api/embed", {"model": "missing:7b", "input": "x"}),
        ("/api/show", {"model": "missing:7b"}),
    ],
)
async def test_unknown_model_is_ollamas_404(client, path, body):
    r = await client.post(path, json=body)
    assert r.status == 404
    assert await r.json() == {"error": 'model "missing:7b" not found, try pulling it first'}


async def test_unknown_model_on_v1_is_openai_error(client):
    body = {"model": "missing", "messages": [{"role": "user", "content": "x"}]}
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status == 404
    err = (await r.json())["error"]
    assert err["type"] == "not_found_error" and "missing" in err["message"]


async def test_bad_input_is_400(client):
    r = await client.post("/api/generate", data=b"{not json")
    assert r.status == 400 and "invalid JSON" in (await r.json())["error"]
    r = await client.post("/api/generate", json={"prompt": "no model"})
    assert r.status == 400 and (await r.json())["error"] == "model is required"
    r = await client.post("/api/generate", json={"model": "alpha:1b", "prompt": "x", "keep_alive": "soon"})
    assert r.status == 400 and "keep_alive" in (await r.json())["error"]
    r = await client.post("/api/generate", json={"model": "alpha:1b", "prompt": "x", "options": {"num_ctx": "big"}})
    assert r.status == 400 and "num_ctx" in (await r.json())["error"]
    r = await client.post("/v1/completions", data=b"[1,")
    assert r.status == 400 and (await r.json())["error"]["type"] == "invalid_request_error"
    assert (await stats(client))["loads"] == 0


async def test_model_larger_than_vram_is_a_clear_error(client):
    r = await client.post("/api/generate", json={"model": "huge:70b", "prompt": "x"})
    assert r.status == 500
    msg = (await r.json())["error"]
    assert "huge:70b" in msg and "VRAM" in msg
    assert (await stats(client))["loads"] == 0


# --- keep_alive ------------------------------------------------------------------------------------


def test_keep_alive_parsing():
    assert parse_keep_alive(None) is None
    assert parse_keep_alive("5m") == 300
    assert parse_keep_alive("1h30m") == 5400
    assert parse_keep_alive(10) == 10
    assert parse_keep_alive(2.5) == 2.5
    assert parse_keep_alive(0) == 0 and parse_keep_alive("0") == 0 and parse_keep_alive("0s") == 0
    assert parse_keep_alive(-1) == math.inf and parse_keep_alive("-1m") == math.inf
    with pytest.raises(BadRequest):
        parse_keep_alive("whenever")
    with pytest.raises(BadRequest):
        parse_keep_alive([5])


def test_runner_options_defaults_and_validation():
    assert runner_options(None)["num_ctx"] == DEFAULT_NUM_CTX
    assert runner_options({"num_ctx": 2, "temperature": 0.1})["num_ctx"] == 4
    with pytest.raises(BadRequest):
        runner_options({"num_batch": 1.5})


async def test_keep_alive_timer_starts_when_last_request_ends(app, client):
    sched = engine_of(app).scheduler
    spec = engine_of(app).spec("alpha:1b")
    runner = await sched.acquire(spec, runner_options(None), 0.05)
    await asyncio.sleep(0.2)  # far past keep_alive, but a request is in flight
    assert await ps_names(client) == ["alpha:1b"]
    sched.release(runner)
    assert runner.timer is not None
    for _ in range(500):
        if not await ps_names(client):
            break
        await asyncio.sleep(0.01)
    assert await ps_names(client) == []
    assert [e[0] for e in sched.events] == ["load_start", "load_end", "unload"]


async def test_keep_alive_zero_unloads_after_the_request(client):
    r = await client.post("/api/generate", json={"model": "alpha:1b", "prompt": "x", "keep_alive": 0, "stream": False})
    assert r.status == 200
    assert await ps_names(client) == []
    s = await stats(client)
    assert s["loads"] == 1 and s["unloads"] == 1


async def test_negative_keep_alive_is_forever_and_absent_keeps_it(client):
    await (await client.post("/api/generate", json={"model": "alpha:1b", "keep_alive": -1})).read()
    await (await client.post("/api/generate", json={"model": "alpha:1b", "prompt": "x", "stream": False})).read()
    m = (await (await client.get("/api/ps")).json())["models"][0]
    assert datetime.fromisoformat(m["expires_at"]).year > 2200
    assert (await stats(client))["resident"][0]["expires_in_s"] is None
    body = {"model": "alpha:1b", "prompt": "x", "stream": False, "keep_alive": "1h"}
    await (await client.post("/api/generate", json=body)).read()
    left = (await stats(client))["resident"][0]["expires_in_s"]
    assert 3000 < left <= 3600


async def test_load_and_unload_requests(client):
    r = await client.post("/api/generate", json={"model": "alpha:1b"})
    assert await r.json() == {
        "model": "alpha:1b",
        "created_at": (await r.json())["created_at"],
        "response": "",
        "done": True,
        "done_reason": "load",
    }
    r = await client.post("/api/chat", json={"model": "beta:1b", "messages": []})
    body = await r.json()
    assert body["done_reason"] == "load" and body["message"] == {"role": "assistant", "content": ""}
    assert sorted(await ps_names(client)) == ["alpha:1b", "beta:1b"]
    r = await client.post("/api/chat", json={"model": "beta:1b", "messages": [], "keep_alive": 0})
    assert (await r.json())["done_reason"] == "unload"
    r = await client.post("/api/generate", json={"model": "alpha:1b", "keep_alive": "0s"})
    assert (await r.json())["done_reason"] == "unload"
    assert await ps_names(client) == []
    # unloading a model that is not loaded is fine and loads nothing
    r = await client.post("/api/generate", json={"model": "gamma:1b", "keep_alive": 0})
    assert r.status == 200 and (await r.json())["done_reason"] == "unload"
    s = await stats(client)
    assert (s["loads"], s["unloads"], s["vram_used"]) == (2, 2, 0)


# --- VRAM: eviction, busy, reload ------------------------------------------------------------------


async def test_eviction_picks_the_shortest_keep_alive(client):
    await (await client.post("/api/generate", json={"model": "alpha:1b", "keep_alive": "10m"})).read()
    await (await client.post("/api/generate", json={"model": "beta:1b", "keep_alive": "2m"})).read()
    r = await client.post("/api/generate", json={"model": "gamma:1b", "prompt": "x", "stream": False})
    assert r.status == 200
    assert sorted(await ps_names(client)) == ["alpha:1b", "gamma:1b"]
    s = await stats(client)
    assert s["evictions"] == 1 and s["peak_vram_used"] <= s["vram_bytes"]


async def test_waits_for_a_busy_model_then_503(app, client):
    sched = engine_of(app).scheduler
    a = await sched.acquire(engine_of(app).spec("alpha:1b"), runner_options(None), None)
    b = await sched.acquire(engine_of(app).spec("beta:1b"), runner_options(None), None)
    r = await client.post("/api/generate", json={"model": "gamma:1b", "prompt": "x"})
    assert r.status == 503
    msg = (await r.json())["error"]
    assert "busy" in msg and "alpha:1b" in msg
    assert (await stats(client))["busy_errors"] == 1
    # once a model goes idle the waiting request gets it
    sched.busy_wait_s = 60.0
    body = {"model": "gamma:1b", "prompt": "x", "stream": False}
    pending = asyncio.create_task(client.post("/api/generate", json=body))
    await asyncio.sleep(0.05)
    assert not pending.done()
    sched.release(b)
    r = await pending
    assert r.status == 200
    events = [(e[0], e[1]) for e in sched.events]
    assert events.index(("evict", "beta:1b")) < events.index(("load_start", "gamma:1b"))
    sched.release(a)
    assert (await stats(client))["peak_vram_used"] <= 10 * GB


async def test_one_load_at_a_time(app, client):
    bodies = [{"model": m, "prompt": "x", "stream": False} for m in ("alpha:1b", "beta:1b", "alpha:1b", "tiny-embed")]
    bodies[3] = {"model": "tiny-embed", "input": "x"}
    paths = ["/api/generate"] * 3 + ["/api/embed"]
    rs = await asyncio.gather(*(client.post(p, json=b) for p, b in zip(paths, bodies, strict=False)))
    assert [r.status for r in rs] == [200, 200, 200, 200]
    events = [e for e in engine_of(app).scheduler.events if e[0].startswith("load")]
    assert len(events) == 6  # alpha loaded once although asked twice at the same time
    for i in range(0, len(events), 2):
        start, end = events[i], events[i + 1]
        assert start[0] == "load_start" and end[0] == "load_end" and start[1] == end[1]
        assert start[2] <= end[2]
        if i + 2 < len(events):
            assert end[2] <= events[i + 2][2]  # the next load starts after this one ended
    assert (await stats(client))["loads"] == 3
    # every request waited for a load: its own, or the one already running for its model
    assert all(body["load_duration"] > 0 for body in [await r.json() for r in rs])


async def test_budget_holds_under_concurrent_mixed_load(aiohttp_client, catalog):
    app = make_app(catalog, 10 * GB, time_scale=SCALE, tokens_per_second=5000, busy_wait_s=60)
    client = await aiohttp_client(app)
    models = ["alpha:1b", "beta:1b", "gamma:1b", "tiny-embed"] * 4
    reqs = [
        client.post("/api/embed", json={"model": m, "input": "x"})
        if m == "tiny-embed"
        else client.post("/api/generate", json={"model": m, "prompt": "x", "stream": False, "keep_alive": i})
        for i, m in enumerate(models)
    ]
    rs = await asyncio.gather(*reqs)
    assert [r.status for r in rs] == [200] * len(models)
    s = await stats(client)
    assert s["peak_vram_used"] <= s["vram_bytes"] and s["vram_used"] <= s["vram_bytes"]
    assert s["loads"] >= 4 and s["evictions"] >= 1


async def test_num_ctx_change_reloads_and_grows(client):
    ok = {"model": "alpha:1b", "prompt": "x", "stream": False}
    await (await client.post("/api/generate", json=ok)).read()
    await (await client.post("/api/generate", json={**ok, "options": {"num_ctx": 8192, "temperature": 0}})).read()
    s = await stats(client)
    assert s["reloads"] == 1 and s["loads"] == 2
    m = (await (await client.get("/api/ps")).json())["models"][0]
    assert m["context_length"] == 8192 and m["size"] > 4 * GB
    # sampling options alone never reload
    await (await client.post("/api/generate", json={**ok, "options": {"num_ctx": 8192, "temperature": 1}})).read()
    assert (await stats(client))["reloads"] == 1
    # no options means the default context again: Ollama reloads
    await (await client.post("/api/generate", json=ok)).read()
    s = await stats(client)
    assert s["reloads"] == 2 and s["resident"][0]["size_bytes"] == 4 * GB


# --- OpenAI compatibility ----------------------------------------------------------------------------


async def test_v1_chat_completion_shapes(client):
    msgs = [{"role": "user", "content": "hi there"}]
    body = await (await client.post("/v1/chat/completions", json={"model": "alpha:1b", "messages": msgs})).json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["system_fingerprint"] == "fp_ollama"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    u = body["usage"]
    assert u["prompt_tokens"] == 2 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    req = {"model": "alpha:1b", "messages": msgs, "stream": True, "stream_options": {"include_usage": True}}
    chunks = await sse(await client.post("/v1/chat/completions", json=req))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    *content, last, usage = chunks
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == choice["message"]["content"]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"] == u
    no_usage = await sse(await client.post("/v1/chat/completions", json={**req, "stream_options": None}))
    assert all("usage" not in c for c in no_usage)


async def test_v1_completions_embeddings_models(client):
    req = {"model": "beta:1b", "prompt": "a b", "max_tokens": 5}
    body = await (await client.post("/v1/completions", json=req)).json()
    assert body["object"] == "text_completion" and body["choices"][0]["finish_reason"] == "length"
    assert len(body["choices"][0]["text"].split()) == 5 and body["usage"]["completion_tokens"] == 5
    chunks = await sse(await client.post("/v1/completions", json={"model": "beta:1b", "prompt": "a b", "stream": True}))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    emb = await (await client.post("/v1/embeddings", json={"model": "tiny-embed", "input": ["x", "y z"]})).json()
    assert emb["object"] == "list" and [d["index"] for d in emb["data"]] == [0, 1]
    assert emb["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    models = await (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert {"id": "alpha:1b", "object": "model", "owned_by": "library"}.items() <= models["data"][0].items()
    one = await (await client.get("/v1/models/alpha:1b")).json()
    assert one["id"] == "alpha:1b"
