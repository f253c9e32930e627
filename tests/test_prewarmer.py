"""Prewarmer end to end: emulator + proxy + prewarmer in-process, DuckDB request log in a temp folder."""

from __future__ import annotations

import asyncio
import time
from argparse import Namespace
from datetime import UTC

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from prewarm.admin import make_service_app
from prewarm.backends import OllamaBackend
from prewarm.catalog import load_catalog, sample_catalog_path
from prewarm.commands.plan import run_plan
from prewarm.config import Settings
from prewarm.emulator import make_app
from prewarm.errors import ActionRefused
from prewarm.forecast import horizon_outlook
from prewarm.planner import Outlook
from prewarm.prewarmer import Prewarmer, status
from prewarm.prewarmer.residency import ResidencyTracker
from prewarm.store import Store

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


async def build(aiohttp_client, tmp_path, listen="127.0.0.1:0", admin_token=None, prewarm=True, time_scale=0.001,
                **settings_kw) -> Rig:
    catalog = load_catalog(sample_catalog_path())
    emulator = await aiohttp_client(make_app(catalog, 24 * GB, time_scale=time_scale, tokens_per_second=5000))
    upstream = str(emulator.make_url("")).rstrip("/")
    settings = Settings(upstream=upstream, db=str(tmp_path / "p.duckdb"), vram_budget=BUDGET, vram_reserve=0,
                        listen=listen, admin_token=admin_token, ps_refresh=0.05, log_flush_interval=0.05,
                        **settings_kw)
    store = Store(settings.db, settings)
    store.open()
    if prewarm:
        pw = Prewarmer(settings, OllamaBackend(upstream, catalog), store, catalog=catalog)
        await pw.start()
        hooks = pw
    else:
        session = OllamaBackend(upstream, catalog)
        hooks = ResidencyTracker(session.list_resident, 0.05)
        await hooks.start()
        pw = None
    proxy = await aiohttp_client(make_service_app(settings, store, hooks, pw))
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


@pytest.mark.parametrize("prewarm", [True, False])
async def test_a_request_that_arrives_while_its_model_loads_is_cold(aiohttp_client, tmp_path, rigs, prewarm):
    """It waits for the load as the first one does (the replay counts it cold too): the upstream lists a loading
    model as resident, so the flag must come from the load itself. Loads take 0.2 x the catalog's seconds."""
    rig = await build(aiohttp_client, tmp_path, prewarm=prewarm, time_scale=0.2)
    rigs.append(rig)
    first = asyncio.create_task(rig.generate("mistral:7b"))
    await asyncio.sleep(0.3)  # the load has begun (and polls at 0.05 s have seen it) but is far from done
    await asyncio.gather(first, rig.generate("mistral:7b"))
    await rig.generate("mistral:7b")
    assert await rig.rows("SELECT cold FROM requests ORDER BY ts_start") == [(True,), (True,), (False,)]
    if prewarm:  # and one that arrives during the prewarmer's own load (a prefetch, an admin load)
        load = asyncio.create_task(rig.proxy.post("/prewarm/load/llama3.1:8b"))
        await asyncio.sleep(0.3)
        await rig.generate("llama3.1:8b")
        (await load).close()
        await rig.generate("llama3.1:8b")
        rows = await rig.rows("SELECT cold FROM requests WHERE model = 'llama3.1:8b' ORDER BY ts_start")
        assert rows == [(True,), (False,)]


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
    # every request was counted by the planning state, and what it holds is what it shows
    pw = rig.prewarmer
    assert all(pw.state.knows(m) for m in order)
    planning = status(pw)["planning"]
    assert planning["vram_cost"] == 0.0 and planning["half_life_s"] == 6 * 3600.0
    assert {r["model"] for r in planning["models"] if r["resident"]} == set(await pw.backend.list_resident())


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
        [(m, now - 60 + i * 300, now + 240 + i * 300, mu) for m, mu in
         [("llama3.1:8b", 3.0), ("mistral:7b", 1.0), ("qwen2.5-coder:14b", 0.01), ("gemma2:9b", 0.0)]
         for i in range(3)],
        columns=["model", "window_start", "window_end", "expected_requests"],
    )
    # 12 GB: llama (6.2 GB) is worth most and gemma (7.6 GB, nobody expected) is in its way; mistral (5.1 GB)
    # then fits beside it; the coder model (10.4 GB) would displace both, which it does not pay for.
    actions = await pw.apply_plan(forecasts)
    assert [(a.action, a.model) for a in actions] == [("unload", "gemma2:9b"), ("load", "llama3.1:8b"),
                                                      ("load", "mistral:7b")]
    assert set(await rig.prewarmer.backend.list_resident()) == {"llama3.1:8b", "mistral:7b"}
    again = await pw.apply_plan(forecasts)
    assert [(a.action, a.model) for a in again] == [("keep", "llama3.1:8b"), ("keep", "mistral:7b")]
    rows = await rig.rows("SELECT action, count(*) FROM prewarm_actions WHERE ok GROUP BY action ORDER BY action")
    assert rows == [("keep", 2), ("load", 2), ("unload", 1)]
    reasons = await rig.rows("SELECT reason FROM prewarm_actions WHERE action = 'load'")
    assert all("requests/h expected (forecast)" in r[0] for r in reasons)
    with pytest.raises(ActionRefused, match="no forecasts"):
        await pw.apply_plan(forecasts.iloc[0:0])
    with pytest.raises(ActionRefused, match="expected_requests"):
        await pw.apply_plan(forecasts.drop(columns="expected_requests").assign(p_any=0.5))


async def test_a_vram_cost_lets_go_of_models_that_do_not_earn_their_memory(aiohttp_client, tmp_path, rigs):
    """At 0 a model nobody expects stays until its room is needed; at a price above its worth it goes."""
    for cost, stays in [(0.0, True), (10.0, False)]:
        rig = await build(aiohttp_client, tmp_path / str(cost), vram_cost=cost)
        rigs.append(rig)
        await rig.generate("gemma2:9b")
        now = time.time()
        forecasts = pd.DataFrame({"model": ["gemma2:9b"], "window_start": [now - 60], "window_end": [now + 240],
                                  "expected_requests": [0.0]})
        await rig.prewarmer.apply_plan(forecasts)
        assert bool(rig.prewarmer.tracker.is_resident("gemma2:9b")) == stays
        unloads = await rig.rows("SELECT model, reason FROM prewarm_actions WHERE action = 'unload' AND ok")
        # (one request's decayed rate is worth well under 10 s per GB-hour: it may go as soon as it is served)
        assert [m for m, _ in unloads] == ([] if stays else ["gemma2:9b"])
        assert all("not worth its memory at vram_cost 10" in why for _, why in unloads)


async def test_requests_get_plan_keep_alive_and_an_explicit_unload_passes(aiohttp_client, tmp_path, rigs):
    """What stays resident is the planner's decision, so Ollama's idle timer must not undo it; a client's
    keep_alive 0 (`ollama stop`) still unloads its model."""
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    await rig.generate("llama3.1:8b", keep_alive="5m")
    await rig.generate("mistral:7b", keep_alive="5m")
    expires = {r["model"]: r["expires_in_s"] for r in (await rig.stats())["resident"]}
    assert expires == {"llama3.1:8b": None, "mistral:7b": None}  # plan_keep_alive -1: forever
    await rig.generate("mistral:7b", keep_alive=0)
    assert [r["model"] for r in (await rig.stats())["resident"]] == ["llama3.1:8b"]


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
    # each resident model's worth: mistral was asked for, the admin load is no request (worth 0)
    assert samples[("prewarm_model_worth", "mistral:7b")] > 0 == samples[("prewarm_model_worth", "llama3.2:1b")]
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
    with pytest.raises(ActionRefused, match="in flight"):
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


def test_the_outlook_counts_what_is_still_ahead_window_by_window():
    now = 1000.0
    df = pd.DataFrame({
        "model": ["a", "a", "a", "b"],
        "window_start": [600.0, 900.0, 1200.0, 1200.0],
        "window_end": [900.0, 1200.0, 1500.0, 1500.0],
        "expected_requests": [50.0, 3.0, 6.0, 1.5],
    })
    o = horizon_outlook(df, now)
    assert o is not None and list(o.edges) == [1000.0, 1200.0, 1500.0]
    # the window that ended does not count; the running one keeps its density (3 per 300 s) for what is left
    d = dict(zip(o.keys, o.density.tolist(), strict=True))
    assert d["a"] == pytest.approx([3.0 / 300, 6.0 / 300])
    assert d["b"] == pytest.approx([0.0, 1.5 / 300])  # no row for the running window: nothing expected there
    assert o.mean_rates()["a"] == pytest.approx((3.0 * 200 / 300 + 6.0) / 500.0)
    assert horizon_outlook(df, 1500.0) is None


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
        await asyncio.to_thread(run_plan, args)
    import duckdb

    con = duckdb.connect(db)
    con.execute("INSERT INTO forecasts SELECT 'r1', now(), 'llama3.2:3b', now() - INTERVAL 1 MINUTE, "
                "now() + INTERVAL 4 MINUTE, 1.0, 0.9, 0.5, 2.0")
    con.close()
    assert await asyncio.to_thread(run_plan, args) == 0
    out = capsys.readouterr().out
    assert "budget 8.00 GB (config" in out and "vram_cost 0 s per GB-hour" in out
    assert "load" in out and "llama3.2:3b" in out and "requests/h expected (forecast)" in out
    args.apply = True
    assert await asyncio.to_thread(run_plan, args) == 0
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
    # Not a cold start (nothing was loaded), and no demand the forecaster or the recency counts learn from.
    assert await rig.rows("SELECT status, cold FROM requests WHERE model = 'llama3:8b-typo'") == [(404, None)]
    from prewarm.forecast.series import events_sql
    from prewarm.store.queries import recent_requests_sql

    for sql in (events_sql(), recent_requests_sql(time.time(), 3600.0)):
        assert "llama3:8b-typo" not in {r[1] if len(r) == 3 else r[0] for r in await rig.rows(sql)}


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
    fresh = Prewarmer(old.settings, old.backend, rig.store, catalog=old.facts.catalog)
    await fresh.start(start_tracker=False)
    # the log's requests replayed into the decayed counts: the same rates as the prewarmer that saw them
    now = fresh.clock()
    for m in ["mistral:7b", "llama3.1:8b"]:
        assert fresh.state.recent_rate(m, now) == pytest.approx(old.state.recent_rate(m, now), rel=1e-3)
    assert fresh.state.recent_rate("mistral:7b", now) > fresh.state.recent_rate("llama3.1:8b", now) > 0


def test_forecasts_for_one_model_under_two_names_combine() -> None:
    """An old log may hold "llama3" and "llama3:latest": their forecasts are one model's, not a race to overwrite."""
    from prewarm.backends.ollama import canonical_name
    from prewarm.forecast.horizon import canonical_outlook

    o = canonical_outlook(Outlook.flat({"llama3": 0.9, "llama3:latest": 0.1, "qwen2.5:7b": 0.3}), canonical_name)
    assert o.mean_rates() == {"llama3:latest": pytest.approx(1.0), "qwen2.5:7b": 0.3}


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
    assert rig.prewarmer is not None and rig.prewarmer.facts.size_of("nomic-embed-text:latest") == 600_000_000


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
    """A prefetch of the coder model (10.4 GB) needs llama3.2:1b's room (1.8 GB of 12, nobody asked for it):
    held, the 1b stays and the prefetch waits; without the hold, it goes."""
    rig = await build(aiohttp_client, tmp_path, manual_hold=hold)
    rigs.append(rig)
    async with rig.proxy.post("/prewarm/load/llama3.2:1b") as r:
        assert r.status == 200
    assert rig.prewarmer is not None
    now = rig.prewarmer.clock()
    forecasts = pd.DataFrame({"model": ["qwen2.5-coder:14b"], "window_start": [now - 60],
                              "window_end": [now + 600], "expected_requests": [5.0]})
    await rig.prewarmer.apply_plan(forecasts)
    assert bool(rig.prewarmer.tracker.is_resident("llama3.2:1b")) == (hold > 0)
    assert bool(rig.prewarmer.tracker.is_resident("qwen2.5-coder:14b")) == (hold == 0)


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


async def test_pins_set_through_the_api_outlive_a_restart(aiohttp_client, tmp_path, rigs):
    rig = await build(aiohttp_client, tmp_path, pins=["gemma2:9b"])
    async with rig.proxy.post("/prewarm/pin/mistral") as r:
        assert (await r.json())["pins"] == ["gemma2:9b", "mistral:latest"]
    async with rig.proxy.post("/prewarm/pin/llama3.2:3b") as r:
        assert r.status == 200
    async with rig.proxy.delete("/prewarm/pin/llama3.2:3b") as r:
        assert r.status == 200
    assert [(m, src) for m, _, src in await rig.rows("SELECT * FROM pins ORDER BY model")] == [
        ("mistral:latest", "api")]
    await rig.prewarmer.stop()
    await rig.store.close()

    again = await build(aiohttp_client, tmp_path, pins=["gemma2:9b"])  # the same database file
    rigs.append(again)
    assert again.prewarmer.pins == {"gemma2:9b", "mistral:latest"}
    history = await again.rows("SELECT model, pinned FROM pin_events ORDER BY ts, pinned DESC")
    assert history == [("mistral:latest", True), ("llama3.2:3b", True), ("llama3.2:3b", False)]


async def test_pushed_forecasts_are_logged_and_planned_from_like_the_schedulers(aiohttp_client, tmp_path, rigs):
    """POST /prewarm/plan: a forecaster outside prewarm hands the planner its rows; a model expected busy is
    prefetched into an idle GPU, and the rows land in ``forecasts``."""
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    now = time.time()
    rows = [{"model": "qwen2.5:7b", "window_start": now + 300 * k, "window_end": now + 300 * (k + 1),
             "expected_requests": 40.0} for k in range(12)]
    async with rig.proxy.post("/prewarm/plan", json={"run_id": "outside", "rows": rows}) as r:
        assert r.status == 200, await r.text()
        answer = await r.json()
    assert answer["rows"] == 12 and answer["models"] == 1
    assert [(a["model"], a["action"]) for a in answer["actions"]] == [("qwen2.5:7b", "load")]
    assert rig.prewarmer is not None and rig.prewarmer.tracker.is_resident("qwen2.5:7b")
    logged = await rig.rows("SELECT run_id, count(*), min(p_any) FROM forecasts GROUP BY run_id")
    assert logged[0][:2] == ("outside", 12) and logged[0][2] == pytest.approx(1.0)
    await rig.generate("qwen2.5:7b")
    assert await rig.rows("SELECT cold FROM requests") == [(False,)]


@pytest.mark.parametrize("body, says", [
    ({"rows": []}, "at least one row"),
    ({"rows": [{"model": "m", "window_start": 10, "window_end": 5, "expected_requests": 1}]}, "after"),
    ({"rows": [{"model": "m", "window_start": 0, "window_end": 5}]}, "required"),
    ({"rows": [{"model": "m", "window_start": 0, "window_end": 5, "expected_requests": "x"}]}, "finite"),
    ({"rows": [{"model": "m", "window_start": 0, "window_end": 5, "expected_requests": 1, "p_any": 2}]}, "[0, 1]"),
    ({"run_id": 3, "rows": [{"model": "m", "window_start": 0, "window_end": 5, "expected_requests": 1}]}, "run_id"),
])
async def test_pushed_forecasts_that_do_not_parse_are_refused_in_one_line(aiohttp_client, tmp_path, rigs, body, says):
    rig = await build(aiohttp_client, tmp_path)
    rigs.append(rig)
    async with rig.proxy.post("/prewarm/plan", json=body) as r:
        assert r.status == 400
        message = (await r.json())["error"]
    assert says in message and "\n" not in message
