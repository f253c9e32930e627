"""The vLLM sleep-mode emulation: sleep levels, wake_up, reload_weights, memory held, requests while asleep."""

from __future__ import annotations

import asyncio
import json

import pytest

from prewarm.emulator import make_vllm_app
from prewarm.emulator.openai_engine import KV_CACHE_FRACTION

GB = 10**9
MODEL = "Qwen/Qwen2.5-7B-Instruct"


@pytest.fixture
def app():
    return make_vllm_app(MODEL, 10 * GB, load_seconds=2.0, time_scale=0.01, tokens_per_second=5000)


@pytest.fixture
async def client(aiohttp_client, app):
    return await aiohttp_client(app)


async def sleeping(client) -> bool:
    return (await (await client.get("/is_sleeping")).json())["is_sleeping"]


async def stats(client) -> dict:
    return await (await client.get("/emulator/stats")).json()


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}


async def test_starts_awake_and_serves(client):
    assert await sleeping(client) is False
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status == 200 and r.headers["X-Prewarm-Emulator"] == "1"
    body = await r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 2
    s = await stats(client)
    assert s["emulator"] is True and s["vram_used"] == 10 * GB and s["requests"] == 1
    models = await (await client.get("/v1/models")).json()
    assert models["data"][0]["id"] == MODEL and models["data"][0]["owned_by"] == "vllm"


async def test_streaming_chat_and_completions(client):
    req = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    text = await (await client.post("/v1/chat/completions", json=req)).text()
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(chunks) - 2
    r = await client.post("/v1/completions", json={"model": MODEL, "prompt": "a b", "max_tokens": 4})
    body = await r.json()
    assert body["object"] == "text_completion" and body["choices"][0]["finish_reason"] == "length"
    assert len(body["choices"][0]["text"].split()) == 4


async def test_sleep_level_1_and_wake(client):
    assert (await client.post("/sleep?level=1")).status == 200
    assert await sleeping(client) is True
    s = await stats(client)
    assert (s["vram_used"], s["weights"], s["cpu_bytes"]) == (0, "offloaded", int(10 * GB * (1 - KV_CACHE_FRACTION)))
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status == 503
    err = (await r.json())["error"]
    assert "wake_up" in err["message"] and err["code"] == 503
    assert (await client.post("/wake_up")).status == 200
    assert await sleeping(client) is False
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
    s = await stats(client)
    assert (s["vram_used"], s["sleeps"], s["wakes"], s["weight_reloads"], s["rejected"]) == (10 * GB, 1, 1, 0, 1)


async def test_sleep_level_2_needs_reload_weights(client):
    await client.post("/sleep?level=2")
    assert (await stats(client))["cpu_bytes"] == 0
    # reload before the memory is back is refused
    r = await client.post("/collective_rpc", json={"method": "reload_weights"})
    assert r.status == 400
    await client.post("/wake_up")
    assert await sleeping(client) is False
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status == 503 and "reload_weights" in (await r.json())["error"]["message"]
    r = await client.post("/collective_rpc", json={"method": "reload_weights"})
    assert r.status == 200 and await r.json() == {"results": [None]}
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
    s = await stats(client)
    assert (s["weights"], s["weight_reloads"], s["vram_used"]) == ("awake", 1, 10 * GB)


async def test_wake_by_tags(client):
    await client.post("/sleep?level=1")
    await client.post("/wake_up?tags=weights")
    s = await stats(client)
    assert await sleeping(client) is True and s["weights"] == "awake" and s["kv_cache"] == "asleep"
    assert s["vram_used"] == int(10 * GB * (1 - KV_CACHE_FRACTION))
    await client.post("/wake_up?tags=kv_cache")
    assert await sleeping(client) is False


async def test_sleep_lets_running_requests_finish(app, client):
    long_req = {**CHAT, "max_tokens": 2000}
    running = asyncio.create_task(client.post("/v1/chat/completions", json=long_req))
    for _ in range(200):
        if (await stats(client))["in_flight"]:
            break
        await asyncio.sleep(0.005)
    await client.post("/sleep?level=1")
    r = await running
    assert r.status == 200 and (await r.json())["usage"]["completion_tokens"] == 2000
    assert await sleeping(client) is True


async def test_bad_input(client):
    assert (await client.post("/sleep?level=3")).status == 400
    assert (await client.post("/wake_up?tags=everything")).status == 400
    r = await client.post("/collective_rpc", json={"method": "shutdown"})
    assert r.status == 400 and (await r.json())["error"]["type"] == "BadRequestError"
    r = await client.post("/v1/chat/completions", json={**CHAT, "model": "other"})
    assert r.status == 404 and "other" in (await r.json())["error"]["message"]
    r = await client.post("/v1/completions", data=b"{")
    assert r.status == 400
    assert (await stats(client))["peak_vram_used"] == 10 * GB


async def test_emulate_vllm_model_flag_serves_a_catalog_model(aiohttp_client):
    from argparse import Namespace

    from prewarm.emulator.main import build_app
    from prewarm.errors import CommandError

    args = Namespace(catalog=None, time_scale=0.0, tokens_per_second=1000.0, vram="8GB", vllm_model="llama3.1:8b")
    app, what = build_app(args)
    assert "vLLM" in what
    client = await aiohttp_client(app)
    s = await (await client.get("/emulator/stats")).json()
    assert s["model"] == "llama3.1:8b" and s["size_bytes"] == 6_200_000_000
    with pytest.raises(CommandError):
        build_app(Namespace(**{**vars(args), "vllm_model": "not-in-catalog"}))
