"""Prewarmer end to end: emulator + proxy + prewarmer in-process, DuckDB request log in a temp folder."""

from __future__ import annotations

import asyncio
import time
from argparse import Namespace
from datetime import UTC

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from prewarm.backends.ollama import OllamaBackend
from prewarm.catalog import load_catalog, sample_catalog_path
from prewarm.config import Settings
from prewarm.emulator.server import make_app
from prewarm.forecast.horizon import horizon_views
from prewarm.prewarmer import Prewarmer, PrewarmError, run_plan_command
from prewarm.proxy.admin_prewarm import routes
from prewarm.proxy.app import make_proxy_app
from prewarm.residency import ResidencyTracker
from prewarm.store.writer import Store

GB = 10**9
BUDGET = 12 * GB


class Rig:
    def __init__(self, emulator, proxy, prewarmer: Prewarmer | None, store: Store):
        self.emulator, self.proxy, self.prewarmer, self.store = emulator, proxy, prewarmer, store

    async def stats(self) -> dict:
        async with self.emulator.get("/emulator/stats") as r:
            return await r.json()

    async def generate(self, model: str, **extra) -> str:
        body = {"model": model, "prompt": "hello there", "stream": False, **extra}
        async with self.proxy.post("/api/generate", json=body) as r:
            text = await r.text()
            assert r.status == 200, text
            assert '"done":true' in text.replace(" ", "")
            return text

    async def rows(self, sql: str) -> list[tuple]:
        await self.store.flush()
        return (await self.store.query(sql))[1]


async def build(aiohttp_client, tmp_path, listen="127.0.0.1:0", admin_token=None, prewarm=True, **settings_kw) -> Rig:
    catalog = load_catalog(sample_catalog_path())
    emulator = await aiohttp_client(make_app(catalog, 24 * GB, time_scale=0.001, tokens_per_second=5000))
    upstream = str(emulator.make_url("")).rstrip("/")
    settings = Settings(upstream=upstream, db=str(tmp_path / "p.duckdb"), vram_budget=BUDGET, vram_reserve=0,
                        listen=listen, admin_token=admin_token, ps_refresh=0.05, log_flush_interval=0.05,
                        **settings_kw)
    store = Store(settings.db, settings)
    store.open()
    if prewarm:
        pw = Prewarmer(settings, OllamaBackend(upstream, catalog), store, catalog=catalog)
        await pw.start()
        hooks, extra = pw, routes(pw)
    else:
        session = OllamaBackend(upstream, catalog)
        hooks = ResidencyTracker(session.list_resident, 0.05)
        await hooks.start()
        pw, extra = None, []
    proxy = await aiohttp_client(make_proxy_app(settings, store, hooks, extra))
    rig = Rig(emulator, proxy, pw, store)
    rig._cleanup = (hooks, None if prewarm else session)
    return rig


@pytest.fixture
async def rigs():
    made: list[Rig] = []
    yield made
    for rig in made:
        hooks, session = rig._cleanup
        if rig.prewarmer is not None:
            await rig.prewarmer.stop()
        else:
            await hooks.stop()
            await session.close()
        await rig.store.close()


async def test_admin_load_then_request_is_warm(aiohttp_client, tmp_path, rigs):
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    async with rig.proxy.post("/prewarm/load/llama3.1:8b") as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["ok"]
    await rig.generate("llama3.1:8b")
    await rig.generate("qwen2.5:7b")  # never loaded: cold
    rows = await rig.rows("SELECT model, cold FROM requests ORDER BY ts_start")
    assert rows == [("llama3.1:8b", False), ("qwen2.5:7b", True)]
    actions = await rig.rows("SELECT model, action, ok, vram_before, vram_after FROM prewarm_actions")
    assert actions == [("llama3.1:8b", "load", True, 0, 6_200_000_000)]


async def test_budget_holds_while_requests_need_twice_the_budget(aiohttp_client, tmp_path, rigs):
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    # 5.1 + 5.6 + 6.2 + 7.6 = 24.5 GB asked for through a 12 GB budget on a 24 GB emulated GPU
    order = ["mistral:7b", "qwen2.5:7b", "llama3.1:8b", "gemma2:9b", "mistral:7b", "llama3.1:8b", "qwen2.5:7b"]
    for model in order:
        await rig.generate(model)
    # two that fit together, concurrently
    await asyncio.gather(rig.generate("mistral:7b", stream=True), rig.generate("qwen2.5:7b"))
    st = await rig.stats()
    assert st["peak_vram_used"] <= BUDGET
    assert st["evictions"] == 0  # the emulator never had to evict by itself: the prewarmer made room first
    unloads = await rig.rows("SELECT count(*) FROM prewarm_actions WHERE action = 'unload' AND ok")
    assert unloads[0][0] >= 4
    # every request went into the VRAM account's on-demand cache: the last ones asked for that fit the budget
    account = rig.prewarmer.account
    assert list(account.lru)[-2:] == ["mistral:7b", "qwen2.5:7b"] and account.lru_bytes <= BUDGET
    assert rig.prewarmer.status()["vram_account"]["allowance_bytes"] <= BUDGET


async def test_without_prewarmer_the_same_run_overflows_the_budget(aiohttp_client, tmp_path, rigs):
    """The control for the test above: it is the prewarmer that holds the budget, not the workload."""
    rig = await build(aiohttp_client, tmp_path, prewarm=False)
    rigs.append(rig)
    for model in ["mistral:7b", "qwen2.5:7b", "llama3.1:8b", "gemma2:9b"]:
        await rig.generate(model)
    assert (await rig.stats())["peak_vram_used"] > BUDGET


async def test_plan_loads_hot_unloads_cold_logs_actions_and_does_not_flap(aiohttp_client, tmp_path, rigs):
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    pw = rig.prewarmer
    await rig.generate("gemma2:9b")  # resident, and the forecast says nobody wants it
    now = time.time()
    forecasts = pd.DataFrame(
        [(m, now - 60 + i * 300, now + 240 + i * 300, p) for m, p in
         [("llama3.1:8b", 0.9), ("mistral:7b", 0.6), ("qwen2.5-coder:14b", 0.01), ("gemma2:9b", 0.0)]
         for i in range(3)],
        columns=["model", "window_start", "window_end", "p_any"],
    )
    # Loading on demand, this traffic would hold gemma2:9b (7.6 GB) alone: the plan fills that much (the VRAM
    # account's allowance), with the model most likely to be asked for, not the whole 12 GB budget.
    assert 6.2e9 < pw.allowance() < 6.2e9 + 5.1e9
    actions = await pw.apply_plan(forecasts)
    assert [(a.action, a.model) for a in actions] == [("unload", "gemma2:9b"), ("load", "llama3.1:8b")]
    assert set(await rig.prewarmer.backend.list_resident()) == {"llama3.1:8b"}
    again = await pw.apply_plan(forecasts)
    assert {a.action for a in again} == {"keep"}
    rows = await rig.rows("SELECT action, count(*) FROM prewarm_actions WHERE ok GROUP BY action ORDER BY action")
    assert rows == [("keep", 1), ("load", 1), ("unload", 1)]
    reasons = await rig.rows("SELECT reason FROM prewarm_actions WHERE action = 'load'")
    assert all("p_any" in r[0] for r in reasons)
    with pytest.raises(PrewarmError, match="no forecasts"):
        await pw.apply_plan(forecasts.iloc[0:0])


async def test_planned_models_get_plan_keep_alive_others_keep_the_clients(aiohttp_client, tmp_path, rigs):
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    rig.prewarmer.planned_resident.add("llama3.1:8b")
    await rig.generate("llama3.1:8b", keep_alive="5m")
    await rig.generate("mistral:7b", keep_alive="5m")
    expires = {r["model"]: r["expires_in_s"] for r in (await rig.stats())["resident"]}
    assert expires["llama3.1:8b"] is None  # plan_keep_alive -1: forever
    assert 200 < expires["mistral:7b"] <= 300


async def test_metrics_parse_and_count(aiohttp_client, tmp_path, rigs):
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    await rig.generate("mistral:7b")
    await rig.generate("mistral:7b")
    async with rig.proxy.post("/prewarm/load/llama3.2:1b") as r:
        assert r.status == 200
    async with rig.proxy.get("/metrics") as r:
        assert r.status == 200
        text = await r.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, s.labels.get("model")): s.value for f in families.values() for s in f.samples}
    assert samples[("prewarm_requests_total", "mistral:7b")] == 2
    assert samples[("prewarm_cold_starts_total", "mistral:7b")] == 1
    assert samples[("prewarm_loads_total", "llama3.2:1b")] == 1
    assert samples[("prewarm_vram_budget_bytes", None)] == BUDGET
    assert samples[("prewarm_vram_used_bytes", None)] == 5_100_000_000 + 1_800_000_000
    # the admin load is not demand: an on-demand cache would hold mistral alone
    assert samples[("prewarm_vram_on_demand_bytes", None)] == 5_100_000_000
    assert 0 <= samples[("prewarm_vram_allowance_bytes", None)] <= 5_100_000_000
    assert "prewarm_load_seconds" in families and "prewarm_forecast_age_seconds" in families
    await rig.store.flush()
    async with rig.proxy.get("/metrics") as r:
        text = await r.text()
    rows = {s.labels["outcome"]: s.value for f in text_string_to_metric_families(text) if f.name == "prewarm_log_rows"
            for s in f.samples}
    assert rows["written"] >= 2 and rows["spilled"] == rows["dropped"] == rows["quarantined"] == 0


async def test_admin_routes_need_token_off_loopback(aiohttp_client, tmp_path, rigs):
    rig = await build(aiohttp_client, tmp_path, listen="0.0.0.0:0", admin_token="s3cret")
    rigs.append(rig)
    for method, path in [("GET", "/prewarm/status"), ("GET", "/metrics"), ("POST", "/prewarm/load/mistral:7b"),
                         ("POST", "/prewarm/pin/mistral:7b"), ("DELETE", "/prewarm/pin/mistral:7b")]:
        async with rig.proxy.request(method, path) as r:
            assert r.status == 401, path
    auth = {"Authorization": "Bearer s3cret"}
    async with rig.proxy.post("/prewarm/pin/mistral", headers=auth) as r:
        assert (await r.json())["pins"] == ["mistral:latest"]
    async with rig.proxy.get("/prewarm/status", headers=auth) as r:
        st = await r.json()
    assert st["budget"] == {"bytes": BUDGET, "source": "config", "detail": st["budget"]["detail"]}
    assert st["pins"] == ["mistral:latest"]
    async with rig.proxy.delete("/prewarm/pin/mistral", headers=auth) as r:
        assert (await r.json())["pins"] == []


async def test_admin_unload_refuses_model_in_flight_and_load_refuses_impossible(aiohttp_client, tmp_path, rigs):
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    pw = rig.prewarmer
    await rig.generate("llama3.1:8b")
    pw.request_started("llama3.1:8b")
    with pytest.raises(PrewarmError, match="in flight"):
        await pw.unload_now("llama3.1:8b")
    async with rig.proxy.post("/prewarm/load/qwen2.5-coder:14b") as r:  # 10.4 GB beside 6.2 GB busy: no room
        assert r.status == 409
    async with rig.proxy.post("/prewarm/unload/llama3.1:8b") as r:
        assert r.status == 409
    from datetime import datetime

    from prewarm.records import RequestEvent

    pw.request_finished("llama3.1:8b", RequestEvent("x", datetime.now(UTC), None, "llama3.1:8b", None,
                                                     "ollama", "/api/generate", False, 200))
    async with rig.proxy.post("/prewarm/unload/llama3.1:8b") as r:
        assert r.status == 200
    assert await pw.backend.list_resident() == {}


def test_horizon_views_combine_windows_and_find_first_demand():
    now = 1000.0
    df = pd.DataFrame({
        "model": ["a", "a", "a", "b"],
        "window_start": [900.0, 1200.0, 1500.0, 1200.0],
        "window_end": [1200.0, 1500.0, 1800.0, 1500.0],
        "p_any": [0.2, 0.5, 0.9, 0.1],
    })
    v = horizon_views(df, now)
    assert v["a"][0] == pytest.approx(1 - 0.8 * 0.5)  # two windows: now's and the next
    assert v["a"][1] == 200.0  # first window with p_any >= 0.5 starts in 200 s
    assert v["b"] == (pytest.approx(0.1), None)


async def test_plan_command_prints_plan_and_refuses_without_forecasts(aiohttp_client, tmp_path, capsys):
    catalog = load_catalog(sample_catalog_path())
    emulator = await aiohttp_client(make_app(catalog, 24 * GB, time_scale=0.001))
    db = str(tmp_path / "c.duckdb")
    settings = Settings(db=db)
    store = Store(db, settings)
    store.open()
    args = Namespace(config=None, db=db, upstream=str(emulator.make_url("")), vram_budget="8GB", catalog=None,
                     apply=False)
    await store.close()
    from prewarm.errors import CommandError

    with pytest.raises(CommandError, match="no forecasts"):
        await asyncio.to_thread(run_plan_command, args)
    import duckdb

    con = duckdb.connect(db)
    con.execute("INSERT INTO forecasts SELECT 'r1', now(), 'llama3.2:3b', now() - INTERVAL 1 MINUTE, "
                "now() + INTERVAL 4 MINUTE, 1.0, 0.9, 0.5, 2.0")
    # the request the forecast came from: the on-demand cache the VRAM account starts from holds it
    con.execute("INSERT INTO requests (id, ts_start, model) VALUES ('q1', now() - INTERVAL 1 HOUR, 'llama3.2:3b')")
    con.close()
    assert await asyncio.to_thread(run_plan_command, args) == 0
    out = capsys.readouterr().out
    assert "budget 8.00 GB (config" in out and "load" in out and "llama3.2:3b" in out
    # the logged request is the on-demand cache the plan may fill: llama3.2:3b's size, not the 8 GB budget
    size = load_catalog(sample_catalog_path()).get("llama3.2:3b").size_bytes
    assert f"the plan fills {size / 1e9:.2f} GB" in out
    args.apply = True
    assert await asyncio.to_thread(run_plan_command, args) == 0
    async with emulator.get("/api/ps") as r:
        assert [m["name"] for m in (await r.json())["models"]] == ["llama3.2:3b"]
    con = duckdb.connect(db, read_only=True)
    assert con.execute("SELECT model, action, ok FROM prewarm_actions").fetchall() == [("llama3.2:3b", "load", True)]
    con.close()


async def test_request_for_unknown_model_evicts_nothing(aiohttp_client, tmp_path, rigs):
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    await rig.generate("gemma2:9b")
    # the default rule sizes it at 5.3 GB: beside 7.6 GB that would need an eviction under 12 GB
    async with rig.proxy.post("/api/generate", json={"model": "llama3:8b-typo", "prompt": "x"}) as r:
        assert r.status == 404
    assert "gemma2:9b" in await rig.prewarmer.backend.list_resident()
    assert await rig.rows("SELECT count(*) FROM prewarm_actions") == [(0,)]


async def test_request_that_needs_a_busy_models_room_waits_for_it(aiohttp_client, tmp_path, rigs):
    """Only an in-flight model could make room: the new request waits until it finishes, then evicts it."""
    rig = await build(aiohttp_client, tmp_path, room_wait=60.0)
    rigs.append(rig)
    # llama3.1:8b (6.2 GB) streams a long answer; qwen2.5-coder:14b (10.4 GB) cannot fit beside it in 12 GB.
    long_answer = asyncio.create_task(rig.generate("llama3.1:8b", stream=True, options={"num_predict": 3000}))
    while not rig.prewarmer.tracker.in_flight.get("llama3.1:8b"):
        await asyncio.sleep(0.005)
    await rig.generate("qwen2.5-coder:14b")
    await long_answer
    st = await rig.stats()
    assert st["peak_vram_used"] <= BUDGET and st["evictions"] == 0
    rows = await rig.rows("SELECT model, status, ts_start, ts_end FROM requests ORDER BY ts_start")
    (m1, s1, _, end1), (m2, s2, _, end2) = rows
    assert (m1, s1, m2, s2) == ("llama3.1:8b", 200, "qwen2.5-coder:14b", 200)
    assert end2 > end1  # the second could only be served once the first had finished and was evicted
    unload = await rig.rows("SELECT model, ok FROM prewarm_actions WHERE action = 'unload'")
    assert unload == [("llama3.1:8b", True)]


async def test_request_gives_up_waiting_for_room_and_is_forwarded(aiohttp_client, tmp_path, rigs):
    rig = await build(aiohttp_client, tmp_path, room_wait=0.05)
    rigs.append(rig)
    long_answer = asyncio.create_task(rig.generate("llama3.1:8b", stream=True, options={"num_predict": 5000}))
    while not rig.prewarmer.tracker.in_flight.get("llama3.1:8b"):
        await asyncio.sleep(0.005)
    await rig.generate("qwen2.5-coder:14b")  # still answered: late beats never
    await long_answer
    failed = await rig.rows("SELECT model, ok, error FROM prewarm_actions WHERE NOT ok")
    assert failed == [("qwen2.5-coder:14b", False, "no room")]


async def test_a_restarted_prewarmer_reads_recency_and_the_on_demand_cache_from_the_log(aiohttp_client, tmp_path,
                                                                                      rigs):
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    for model in ["mistral:7b", "llama3.1:8b", "mistral:7b"]:
        await rig.generate(model)
    await rig.store.flush()
    old = rig.prewarmer
    fresh = Prewarmer(old.settings, old.backend, rig.store, catalog=old.catalog)
    await fresh.start(start_tracker=False)
    # the log's requests replayed into the idle-time histories: mistral's gap is known, llama's last use too
    assert set(fresh.recent.last) == {"mistral:7b", "llama3.1:8b"}
    assert fresh.recent.last["mistral:7b"] == pytest.approx(old.recent.last["mistral:7b"], abs=1.0)
    assert fresh.recent.p_within("mistral:7b", fresh.clock(), 600.0) == pytest.approx(
        old.recent.p_within("mistral:7b", fresh.clock(), 600.0), abs=0.01)
    # the shadow cache: oldest use first, with the times of the latest requests, so it knows its horizon
    assert list(fresh.account.lru)[-2:] == ["llama3.1:8b", "mistral:7b"]
    assert fresh.account.used_at["llama3.1:8b"] == pytest.approx(old.recent.last["llama3.1:8b"], abs=1.0)
    oldest = next(iter(fresh.account.lru))
    expected = fresh.clock() - fresh.account.used_at.get(oldest, fresh.clock())
    assert fresh.account.keep_horizon_s(fresh.clock(), 0.0) == pytest.approx(expected, abs=1.0)


def test_forecasts_for_one_model_under_two_names_combine() -> None:
    """An old log may hold "llama3" and "llama3:latest": their forecasts are one model's, not a race to overwrite."""
    from prewarm.backends.ollama import canonical_name
    from prewarm.forecast.horizon import canonical_views

    views = canonical_views({"llama3": (0.9, 100.0), "llama3:latest": (0.1, None), "qwen2.5:7b": (0.3, 50.0)},
                            canonical_name)
    assert views == {"llama3:latest": (pytest.approx(1 - 0.1 * 0.9), 100.0), "qwen2.5:7b": (0.3, 50.0)}


async def test_an_untagged_name_is_logged_canonical_and_keeps_its_catalog_size(aiohttp_client, tmp_path, rigs):
    """`nomic-embed-text` is the catalog's `nomic-embed-text:latest` (600 MB), not an unknown 5 GB model that
    would push a resident one out."""
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    await rig.generate("gemma2:9b")
    await rig.generate("llama3.2:3b")  # 11.0 of the 12 GB budget
    async with rig.proxy.post("/api/embed", json={"model": "nomic-embed-text", "input": "hi"}) as r:
        assert r.status == 200, await r.text()
    rows = await rig.rows("SELECT model FROM requests ORDER BY ts_start")
    assert [m for (m,) in rows] == ["gemma2:9b", "llama3.2:3b", "nomic-embed-text:latest"]
    assert await rig.rows("SELECT count(*) FROM prewarm_actions WHERE action = 'unload'") == [(0,)]
    assert (await rig.stats())["evictions"] == 0
    assert rig.prewarmer is not None and rig.prewarmer.size_of("nomic-embed-text:latest") == 600_000_000


async def _as_user(rig: Rig, model: str, header: str = "X-Prewarm-User") -> None:
    body = {"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    async with rig.proxy.post("/api/generate", json=body, headers={header: "alice"}) as r:
        assert r.status == 200, await r.text()


async def test_a_hint_loads_the_users_usual_model_and_their_next_request_is_warm(aiohttp_client, tmp_path, rigs):
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    for _ in range(3):
        await _as_user(rig, "llama3.2:3b")
    await rig.generate("mistral:7b")  # someone else's model
    async with rig.proxy.post("/prewarm/unload/llama3.2:3b") as r:
        assert r.status == 200
    async with rig.proxy.post("/prewarm/hint", json={"user": "alice"}) as r:
        assert r.status == 200, await r.text()
        answer = await r.json()
    assert answer["models"] == ["llama3.2:3b"] and answer["loaded"] == ["llama3.2:3b"]
    await _as_user(rig, "llama3.2:3b")
    rows = await rig.rows("SELECT cold FROM requests WHERE model = 'llama3.2:3b' ORDER BY ts_start DESC LIMIT 1")
    assert rows == [(False,)]
    async with rig.proxy.post("/prewarm/hint", json={"model": 7}) as r:
        assert r.status == 400


async def test_an_open_webui_user_listing_models_is_a_hint(aiohttp_client, tmp_path, rigs):
    """Open WebUI (ENABLE_FORWARD_USER_INFO_HEADERS) names the user in X-OpenWebUI-User-Id."""
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    for _ in range(3):
        await _as_user(rig, "phi3.5:3.8b", header="X-OpenWebUI-User-Id")
    async with rig.proxy.post("/prewarm/unload/phi3.5:3.8b") as r:
        assert r.status == 200
    assert rig.prewarmer is not None and not rig.prewarmer.tracker.is_resident("phi3.5:3.8b")
    async with rig.proxy.get("/api/tags", headers={"X-OpenWebUI-User-Id": "alice"}) as r:
        assert r.status == 200
    for _ in range(200):
        if rig.prewarmer.tracker.is_resident("phi3.5:3.8b"):
            break
        await asyncio.sleep(0.02)
    await _as_user(rig, "phi3.5:3.8b", header="X-OpenWebUI-User-Id")
    rows = await rig.rows("SELECT user_id, cold FROM requests WHERE model = 'phi3.5:3.8b' ORDER BY ts_start DESC LIMIT 1")
    assert rows == [("alice", False)]


@pytest.mark.parametrize("hold", [1800.0, 0.0], ids=["held", "without-hold"])
async def test_a_model_loaded_by_hand_is_held_against_the_next_plan(aiohttp_client, tmp_path, rigs, hold):
    """The plan wants llama3.2:1b gone (no forecast, no request): held, it stays; without the hold, it goes."""
    rig = await build(aiohttp_client, tmp_path, manual_hold=hold)
    rigs.append(rig)
    async with rig.proxy.post("/prewarm/load/llama3.2:1b") as r:
        assert r.status == 200
    assert rig.prewarmer is not None
    now = rig.prewarmer.clock()
    forecasts = pd.DataFrame({"model": ["mistral:7b"], "window_start": [now - 60], "window_end": [now + 600],
                              "p_any": [0.9]})
    await rig.prewarmer.apply_plan(forecasts)
    assert bool(rig.prewarmer.tracker.is_resident("llama3.2:1b")) == (hold > 0)
    skipped = await rig.rows("SELECT count(*) FROM prewarm_actions WHERE model = 'llama3.2:1b' AND action = 'unload' "
                             "AND error LIKE 'skipped: held%'")
    assert skipped == [(1 if hold > 0 else 0,)]


async def test_the_grafana_dashboard_graphs_every_metric_family_and_only_served_ones(aiohttp_client, tmp_path, rigs):
    import json
    import re
    from pathlib import Path

    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    await rig.generate("mistral:7b")
    async with rig.proxy.get("/metrics") as r:
        text = await r.text()
    # (prometheus_client's *_created series are the start times of counters and histograms, not families to graph)
    served = {f.name for f in text_string_to_metric_families(text) if not f.name.endswith("_created")}
    assert {"prewarm_ttft_seconds", "prewarm_request_seconds", "prewarm_inflight_requests", "prewarm_resident_bytes",
            "prewarm_log_rows", "prewarm_requests"} <= served
    dashboard = json.loads((Path(__file__).parents[1] / "deploy" / "grafana-dashboard.json").read_text())
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"prewarm_[a-z_]+", target["expr"]):
                queried.add(re.sub(r"_(total|bucket|sum|count)$", "", name))
    assert queried <= served, queried - served
    assert served <= queried, served - queried  # a panel for every family /metrics serves
