"""Upstream faults against real processes: `prewarm emulate` killed mid-stream and restarted behind a
running `prewarm serve`; and, in-process, a saturated upstream and a model larger than the budget.

The client must always get an answer it can act on (a clean cut or an error in the API's own shape),
every request must be a row, and after a restart the service must see the upstream's new (empty)
resident set on its next poll and serve the next request.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import duckdb
import pytest

from prewarm.admin import make_service_app
from prewarm.backends import OllamaBackend
from prewarm.catalog import load_catalog, sample_catalog_path
from prewarm.config import Settings
from prewarm.emulator import make_app
from prewarm.localproc import PREWARM_CMD, clean_env, free_port, wait_http
from prewarm.prewarmer import Prewarmer
from prewarm.store import Store

GB = 10**9
PREWARM = PREWARM_CMD
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str) -> tuple[int, dict]:
    try:
        with OPENER.open(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post(url: str, body: dict, timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start_emulator(port: int, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        PREWARM + ["emulate", "--listen", f"127.0.0.1:{port}", "--vram", "24GB", "--time-scale", "0.001",
                   "--tokens-per-second", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    wait_http(f"http://127.0.0.1:{port}/api/version", proc)
    return proc


def resident(base: str) -> list[str]:
    return sorted(r["model"] for r in get_json(base + "/prewarm/status")[1]["resident"])


async def wait_for(cond, what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(cond):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_upstream_killed_mid_stream_then_restarted(tmp_path: Path) -> None:
    env = clean_env() | {"PREWARM_PS_REFRESH": "0.2"}
    emu_port, proxy_port = free_port(), free_port()
    db = tmp_path / "p.duckdb"
    base = f"http://127.0.0.1:{proxy_port}"
    emu = start_emulator(emu_port, env)
    serve = subprocess.Popen(
        PREWARM + ["serve", "--upstream", f"http://127.0.0.1:{emu_port}", "--listen", f"127.0.0.1:{proxy_port}",
                   "--db", str(db), "--no-schedule"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_http(base + "/prewarm/health", serve)
        # 1. a warm-up request makes the model resident; the service sees it.
        status, _ = await asyncio.to_thread(post, base + "/api/generate",
                                            {"model": "qwen2.5:0.5b", "prompt": "hi", "stream": False,
                                             "options": {"num_predict": 2}})
        assert status == 200
        await wait_for(lambda: resident(base) == ["qwen2.5:0.5b"], "the resident set to show the model")

        # 2. a long stream; the upstream dies after the first chunks.
        async with aiohttp.ClientSession() as session:
            async with session.post(base + "/api/chat", json={
                "model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": "x"}],
                "options": {"num_predict": 10_000}}) as r:
                assert r.status == 200
                first = await r.content.readline()
                assert json.loads(first)["done"] is False
                emu.send_signal(signal.SIGKILL)
                emu.wait(timeout=30)
                with pytest.raises(aiohttp.ClientPayloadError):  # a clean cut, not a hang and not a fake end
                    while await r.content.readline():
                        pass

        # 3. while it is down: a clear 502 in each API's shape.
        status, body = await asyncio.to_thread(post, base + "/api/generate", {"model": "qwen2.5:0.5b", "prompt": "a"})
        assert status == 502 and "unreachable" in json.loads(body)["error"]
        status, body = await asyncio.to_thread(post, base + "/v1/chat/completions", {
            "model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": "a"}]})
        assert status == 502 and json.loads(body)["error"]["code"] == "upstream_unreachable"

        # 4. restarted on the same port with nothing loaded: the next poll resyncs, the next request succeeds.
        emu = start_emulator(emu_port, env)
        await wait_for(lambda: resident(base) == [], "the resident set to resync to the restarted upstream")
        status, body = await asyncio.to_thread(post, base + "/api/generate",
                                               {"model": "qwen2.5:0.5b", "prompt": "again", "stream": False,
                                                "options": {"num_predict": 2}})
        assert status == 200 and json.loads(body)["done"] is True
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    finally:
        for proc in (serve, emu):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT endpoint, status, cold, error FROM requests ORDER BY ts_start").fetchall()
    con.close()
    assert [(e, s) for e, s, _, _ in rows] == [
        ("/api/generate", 200), ("/api/chat", 502), ("/api/generate", 502), ("/v1/chat/completions", 502),
        ("/api/generate", 200)]
    assert rows[1][3].startswith("upstream stream broken")
    assert rows[4][2] is True  # after the restart the model was known to be gone: a cold request


@pytest.fixture
async def in_process(aiohttp_client, tmp_path):
    """Emulator (24 GB, busy requests give up after 0.3 s) + prewarm proxy with an 8 GB budget."""
    made = []

    async def build(room_wait: float) -> tuple:
        catalog = load_catalog(sample_catalog_path())
        emulator = await aiohttp_client(make_app(catalog, 8 * GB, time_scale=0.001, tokens_per_second=200,
                                                 busy_wait_s=0.3))
        upstream = str(emulator.make_url("")).rstrip("/")
        settings = Settings(upstream=upstream, db=str(tmp_path / "p.duckdb"), vram_budget=8 * GB, vram_reserve=0,
                            ps_refresh=0.05, log_flush_interval=0.05, room_wait=room_wait)
        store = Store(settings.db, settings)
        store.open()
        pw = Prewarmer(settings, OllamaBackend(upstream, catalog), store, catalog=catalog)
        await pw.start()
        proxy = await aiohttp_client(make_service_app(settings, store, pw))
        made.append((pw, store))
        return proxy, store

    yield build
    for pw, store in made:
        await pw.stop()
        await store.close()


async def _stream_in_flight(proxy, model: str) -> asyncio.Task:
    async def long() -> int:
        async with proxy.post("/api/generate", json={"model": model, "prompt": "x",
                                                     "options": {"num_predict": 400}}) as r:
            await r.read()
            return r.status

    task = asyncio.create_task(long())
    while True:  # until the emulator holds the model for it
        async with proxy.get("/api/ps") as r:
            if any(m["name"] == model for m in (await r.json())["models"]):
                return task
        await asyncio.sleep(0.01)


async def test_saturated_upstream_answers_503_in_each_api_shape_and_logs_it(in_process) -> None:
    """Every byte of VRAM is held by a model in flight: the upstream refuses (busy) and the client gets that
    refusal in its API's shape, after room_wait, instead of hanging."""
    proxy, store = await in_process(room_wait=0.05)
    busy = await _stream_in_flight(proxy, "llama3.1:8b")  # 6.2 of 8 GB; qwen2.5:7b (5.6 GB) cannot fit beside it
    r = await proxy.post("/api/chat", json={"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "a"}]})
    assert r.status == 503 and "busy" in (await r.json())["error"]
    r = await proxy.post("/v1/chat/completions", json={"model": "qwen2.5:7b",
                                                       "messages": [{"role": "user", "content": "a"}]})
    body = await r.json()
    assert r.status == 503 and "busy" in body["error"]["message"] and body["error"]["type"]
    assert not busy.done()
    assert await busy == 200
    await store.flush()
    _, rows = await store.query("SELECT model, status, error FROM requests WHERE model IS NOT NULL ORDER BY ts_start")
    assert [(m, s) for m, s, _ in rows] == [("llama3.1:8b", 200), ("qwen2.5:7b", 503), ("qwen2.5:7b", 503)]
    assert all("busy" in e for _, s, e in rows if s == 503)


async def test_model_larger_than_the_budget_is_forwarded_without_waiting_for_room(in_process) -> None:
    """No eviction can make room for a model larger than the whole budget: waiting room_wait (an hour here)
    for busy models to finish would only delay the upstream's own answer."""
    proxy, store = await in_process(room_wait=3600)
    busy = await _stream_in_flight(proxy, "llama3.1:8b")
    r = await proxy.post("/api/generate", json={"model": "qwen2.5-coder:14b", "prompt": "a", "stream": False})
    assert r.status == 500 and "more than the emulated GPU" in (await r.json())["error"]
    assert not busy.done()  # answered while the in-flight model still held its room
    assert await busy == 200
