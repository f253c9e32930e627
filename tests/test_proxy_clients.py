"""Unmodified official clients (`ollama`, `openai`) through the proxy, each call checked in DuckDB."""

from __future__ import annotations

import ollama
import openai
import pytest
from test_proxy_app import Stack, start_stack

from prewarm.catalog import load_catalog, sample_catalog_path
from prewarm.config import hash_api_key
from prewarm.emulator import make_app


@pytest.fixture
async def stack(aiohttp_server, tmp_path) -> Stack:
    emu = await aiohttp_server(
        make_app(load_catalog(sample_catalog_path()), vram_bytes=24 * 10**9, time_scale=0.001, tokens_per_second=5000)
    )
    return await start_stack(
        aiohttp_server, str(emu.make_url("")).rstrip("/"), tmp_path, api_keys={hash_api_key("sk-dave"): "dave"}
    )


async def test_ollama_client_calls_logged(stack: Stack) -> None:
    client = ollama.AsyncClient(host=stack.url, headers={"X-Prewarm-User": "alice"})
    opts = {"num_predict": 5}

    r = await client.generate(model="llama3.2:1b", prompt="Why is the sky blue?", options=opts)
    assert r.done and r.eval_count == 5 and r.response
    parts = [p async for p in await client.generate(model="llama3.2:1b", prompt="again", options=opts, stream=True)]
    assert parts[-1].done and "".join(p.response for p in parts)
    c = await client.chat(model="qwen2.5:0.5b", messages=[{"role": "user", "content": "hi"}], options=opts)
    assert c.message.role == "assistant" and c.message.content
    chunks = [p async for p in await client.chat(
        model="qwen2.5:0.5b", messages=[{"role": "user", "content": "hi"}], options=opts, stream=True)]
    assert chunks[-1].done and chunks[-1].eval_count == 5
    e = await client.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(e.embeddings) == 2
    old = await client.embeddings(model="nomic-embed-text", prompt="a")
    assert len(old.embedding) > 0
    names = {m.model for m in (await client.list()).models}
    assert "llama3.2:1b" in names
    ps = {m.model for m in (await client.ps()).models}
    assert {"llama3.2:1b", "qwen2.5:0.5b"} <= ps

    await stack.store.flush()
    _, rows = await stack.store.query(
        "SELECT endpoint, model, user_id, stream, status, prompt_tokens, completion_tokens, cold "
        "FROM requests ORDER BY ts_start"
    )
    assert [r[:5] for r in rows] == [
        ("/api/generate", "llama3.2:1b", "alice", False, 200),
        ("/api/generate", "llama3.2:1b", "alice", True, 200),
        ("/api/chat", "qwen2.5:0.5b", "alice", False, 200),
        ("/api/chat", "qwen2.5:0.5b", "alice", True, 200),
        ("/api/embed", "nomic-embed-text", "alice", False, 200),
        ("/api/embeddings", "nomic-embed-text", "alice", False, 200),
        ("/api/tags", None, "alice", False, 200),
        ("/api/ps", None, "alice", False, 200),
    ]
    gen, gen_stream, chat, chat_stream, embed = rows[:5]
    assert gen[5] > 0 and gen[6] == 5 and gen_stream[6] == 5 and chat[6] == 5 and chat_stream[6] == 5
    assert embed[5] > 0  # Ollama counts embedded tokens as prompt_eval_count
    assert [r[7] for r in rows[:4]] == [True, False, True, False]


async def test_openai_client_calls_logged(stack: Stack) -> None:
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="sk-dave", max_retries=0)
    msgs = [{"role": "user", "content": "hello"}]

    r = await client.chat.completions.create(model="llama3.2:1b", messages=msgs, max_tokens=4)
    assert r.choices[0].message.content and r.usage.completion_tokens == 4
    stream = await client.chat.completions.create(
        model="llama3.2:1b", messages=msgs, max_tokens=4, stream=True,
        stream_options={"include_usage": True}, user="bob",
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == 4
    comp = await client.completions.create(model="qwen2.5:0.5b", prompt="once", max_tokens=3)
    assert comp.choices[0].text
    emb = await client.embeddings.create(model="nomic-embed-text", input="x")
    assert len(emb.data[0].embedding) > 0
    models = [m.id async for m in client.models.list()]
    assert "qwen2.5:0.5b" in models
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="missing:7b", messages=msgs)
    await client.close()

    await stack.store.flush()
    _, rows = await stack.store.query(
        "SELECT endpoint, model, user_id, stream, status, prompt_tokens, completion_tokens, api "
        "FROM requests ORDER BY ts_start"
    )
    assert [r[:5] for r in rows] == [
        ("/v1/chat/completions", "llama3.2:1b", "dave", False, 200),
        ("/v1/chat/completions", "llama3.2:1b", "bob", True, 200),
        ("/v1/completions", "qwen2.5:0.5b", "dave", False, 200),
        ("/v1/embeddings", "nomic-embed-text", "dave", False, 200),
        ("/v1/models", None, "dave", False, 200),
        ("/v1/chat/completions", "missing:7b", "dave", False, 404),
    ]
    assert [r[6] for r in rows[:3]] == [4, 4, 3]
    assert all(r[7] == "openai" for r in rows)
