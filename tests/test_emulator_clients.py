"""The official ollama and openai Python clients, unmodified, against the emulator: the shapes are real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import ollama
import openai
import pytest

from prewarm.catalog import load_catalog, sample_catalog_path
from prewarm.emulator import make_app, text

GB = 10**9


@pytest.fixture
async def base_url(aiohttp_server):
    app = make_app(load_catalog(sample_catalog_path()), 24 * GB, time_scale=0.001, tokens_per_second=5000)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def test_ollama_client(base_url):
    client = ollama.AsyncClient(host=base_url)
    r = await client.generate(model="llama3.2:1b", prompt="why is the sky blue", options={"seed": 1})
    assert r.done and r.done_reason == "stop"
    assert r.response == "".join(text.reply_tokens("llama3.2:1b", "why is the sky blue", 1))
    assert r.load_duration > 0 and r.eval_count == len(r.response.split()) and r.prompt_eval_count == 5
    parts = [p async for p in await client.generate(model="llama3.2:1b", prompt="hi", stream=True)]
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    msgs = [{"role": "user", "content": "hello"}]
    c = await client.chat(model="mistral:7b", messages=msgs)
    assert c.message.role == "assistant" and c.message.content and c.done
    streamed = [p async for p in await client.chat(model="mistral:7b", messages=msgs, stream=True)]
    assert "".join(p.message.content for p in streamed) == c.message.content
    e = await client.embed(model="nomic-embed-text", input=["a", "b c"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) == text.EMBEDDING_DIM
    listed = await client.list()
    assert {m.model for m in listed.models} >= {"llama3.2:1b", "nomic-embed-text:latest"}
    assert all(m.size > 0 and m.details.family for m in listed.models)
    running = await client.ps()
    names = {m.model for m in running.models}
    assert names == {"llama3.2:1b", "mistral:7b", "nomic-embed-text:latest"}
    assert all(m.size_vram == m.size and m.expires_at is not None for m in running.models)
    shown = await client.show("llama3.1:8b")
    assert shown.modelinfo["llama.block_count"] == 32
    with pytest.raises(ollama.ResponseError) as err:
        await client.generate(model="nope:1b", prompt="x")
    assert err.value.status_code == 404 and "not found" in err.value.error


async def test_openai_client(base_url):
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x")
    try:
        msgs = [{"role": "user", "content": "hello there"}]
        r = await client.chat.completions.create(model="llama3.2:1b", messages=msgs)
        assert r.object == "chat.completion" and r.choices[0].finish_reason == "stop"
        assert r.usage.prompt_tokens == 2 and r.usage.completion_tokens == len(r.choices[0].message.content.split())
        stream = await client.chat.completions.create(
            model="llama3.2:1b", messages=msgs, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert content == r.choices[0].message.content
        assert chunks[-1].usage.total_tokens == r.usage.total_tokens
        comp = await client.completions.create(model="qwen2.5:0.5b", prompt="say something", max_tokens=6)
        assert comp.choices[0].finish_reason == "length" and len(comp.choices[0].text.split()) == 6
        emb = await client.embeddings.create(model="nomic-embed-text", input="hello")
        assert len(emb.data[0].embedding) == text.EMBEDDING_DIM
        models = [m.id async for m in client.models.list()]
        assert "llama3.1:8b" in models
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="nope:1b", messages=msgs)
    finally:
        await client.close()


def test_prewarm_emulate_command_runs_until_sigterm(tmp_path):
    """`prewarm emulate` serves, says it is an emulator, and exits 0 on SIGTERM."""
    cmd = [sys.executable, "-m", "prewarm", "emulate", "--listen", "127.0.0.1:0", "--vram", "8GB", "--time-scale", "0"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stderr.readline()
        assert "EMULATOR" in line, line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=10) as resp:
            assert resp.headers["X-Prewarm-Emulator"] == "1"
            assert b"prewarm-emulator" in resp.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_prewarm_emulate_rejects_bad_arguments():
    r = subprocess.run(
        [sys.executable, "-m", "prewarm", "emulate", "--listen", "nowhere", "--vram", "8GB"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "--listen must be HOST:PORT" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "prewarm", "emulate", "--vram", "lots"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1 and "--vram" in r.stderr
