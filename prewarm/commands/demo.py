"""`prewarm demo`: the whole story in a few minutes, on the built-in emulator, with no GPU.

1. Nine days of synthetic multi-user traffic for the sample catalog's models.
2. The forecaster is trained (in a worker process) on the days before the last.
3. The last day is played, compressed, over real HTTP through the real proxy to
   `prewarm emulate` (a separate process), while the prewarmer loads and evicts
   from the forecasts every window, under a VRAM budget smaller than the models.
4. What the request log shows, read with SQL: requests, cold starts, a prewarm.
5. The same day replayed in the simulator under every baseline (Ollama's keep-alive,
   LRU, top-N, the Azure histogram policy, greedy-dual and decayed LFU), the forecast
   policy and the oracle; the headline compares with the best of the baselines.

Time is compressed by one factor everywhere (traffic, windows and the emulator's
load times), so every duration printed is in the workload's own time: a 12 s load
takes 12 s / factor of wall time. The emulator says it is one, and so does this output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import numpy as np
import pandas as pd
from aiohttp import web

from prewarm.admin import make_service_app
from prewarm.backends.ollama import OllamaBackend
from prewarm.catalog import Catalog, load_catalog, sample_catalog_path
from prewarm.config import Settings
from prewarm.errors import CommandError
from prewarm.forecast.model import ForecastParams, HeatForecaster
from prewarm.forecast.training import forecast_rows
from prewarm.localproc import PREWARM_CMD, ProcessFailed, free_port, wait_http
from prewarm.prewarmer import Prewarmer
from prewarm.sim.engine import Span
from prewarm.sim.report import to_table
from prewarm.sim.run import BASELINES, ModelCosts, run_replays
from prewarm.sim.trace import frame_to_trace
from prewarm.store.writer import Store
from prewarm.units import format_size
from prewarm.workload import synth

DAY_S = 86400.0
GB = 10**9


@dataclass(frozen=True)
class DemoPlan:
    """The knobs of one demo run; `quick` trades realism for a shorter run."""

    days: int = 9  # the workload starts on a Monday: day 9, played live, is a Tuesday
    users: int = 60
    models: int = 10
    seed: int = 7
    compress: float = 720.0  # one day of traffic in 2 minutes
    budget: int = 12 * GB
    emulator_vram: int = 24 * GB
    window_s: float = 300.0
    horizon: int = 3

    @classmethod
    def for_args(cls, quick: bool) -> DemoPlan:
        return cls(days=5, users=40, compress=2880.0) if quick else cls()  # live: a Friday


def _say(text: str = "") -> None:
    print(text, flush=True)


def demo_workload(plan: DemoPlan, catalog: Catalog) -> pd.DataFrame:
    """The synthetic generator's traffic, its models renamed onto the sample catalog (most popular first)."""
    events = synth(models=plan.models, users=plan.users, days=plan.days, seed=plan.seed)
    by_popularity = events["model"].value_counts().index.tolist()
    names = [e.model for e in sorted(catalog, key=lambda e: e.size_bytes)]
    rng = np.random.default_rng(plan.seed)
    rng.shuffle(names)
    mapping = dict(zip(by_popularity, names, strict=False))
    events = events[events["model"].isin(mapping)].copy()
    events["model"] = events["model"].map(mapping)
    return events.reset_index(drop=True)


def _fit(history: pd.DataFrame, end_ts: float, params: ForecastParams) -> HeatForecaster:
    return HeatForecaster.fit(history, end_ts, params)


class CompressedClock:
    """Workload time running `factor` times faster than the wall clock: the clock the prewarmer plans in."""

    def __init__(self, t0: float, factor: float) -> None:
        self.t0, self.factor = t0, factor
        self.wall0 = time.monotonic()
        self.epoch0 = time.time()

    def start(self) -> None:
        self.wall0 = time.monotonic()
        self.epoch0 = time.time()

    def now(self) -> float:
        return self.t0 + (time.monotonic() - self.wall0) * self.factor

    def wall_seconds_until(self, workload_ts: float) -> float:
        return max(0.0, (workload_ts - self.now()) / self.factor)


class LiveDay:
    """Plays one day of traffic through the proxy in compressed time while the prewarmer plans every window."""

    def __init__(self, plan: DemoPlan, events: pd.DataFrame, history: pd.DataFrame, forecaster: HeatForecaster,
                 prewarmer: Prewarmer, store: Store, proxy_url: str, clock: CompressedClock) -> None:
        self.plan, self.events, self.history, self.store = plan, events, history, store
        self.forecaster, self.prewarmer, self.proxy_url = forecaster, prewarmer, proxy_url
        self.clock = clock
        self.sent = 0
        self.failed = 0
        self.plans = 0

    async def _request(self, session: aiohttp.ClientSession, model: str, user: str) -> None:
        body: dict[str, Any]
        if "embed" in model:
            path, body = "/api/embed", {"model": model, "input": "hello from the demo"}
        else:
            path = "/api/chat"
            body = {"model": model, "messages": [{"role": "user", "content": "hello from the demo"}],
                    "stream": True, "options": {"num_predict": 8}}
        try:
            async with session.post(self.proxy_url + path, json=body, headers={"X-Prewarm-User": user}) as r:
                async for _ in r.content.iter_any():
                    pass
                if r.status != 200:
                    self.failed += 1
        except aiohttp.ClientError:
            self.failed += 1

    async def _traffic(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession() as session:
            for ts, model, user in self.events[["ts", "model", "user"]].itertuples(index=False):
                await asyncio.sleep(self.clock.wall_seconds_until(float(ts)))
                t = asyncio.create_task(self._request(session, str(model), str(user)))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                self.sent += 1
            if tasks:
                await asyncio.gather(*tasks)

    async def _planning(self, stop: asyncio.Event) -> None:
        """Every window: forecast from everything seen so far, then let the prewarmer act on it."""
        w = self.plan.window_s
        seen = self.history
        while not stop.is_set():
            now = self.clock.now()
            upto = int(np.searchsorted(self.events["ts"].to_numpy(), now))
            if upto:
                seen = pd.concat([self.history, self.events.iloc[:upto]], ignore_index=True)
            # Plan a little ahead of the window boundary, so loads finish before its requests.
            forecasts = self.forecaster.predict(seen, now, self.plan.horizon)
            # Into the forecasts table as serve's scheduler writes them: the status page and SQL read them there.
            self.store.put_rows("forecasts", forecast_rows(forecasts, "demo", now))
            await self.prewarmer.apply_plan(forecasts, made_at=now)
            self.plans += 1
            next_window = (np.floor((now + 0.1 * w) / w) + 1) * w - 0.1 * w
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.clock.wall_seconds_until(next_window))

    async def run(self) -> None:
        self.clock.start()
        stop = asyncio.Event()
        planner = asyncio.create_task(self._planning(stop))
        try:
            await self._traffic()
        finally:
            stop.set()
            await planner


async def _serve_proxy(settings: Settings, store: Store, prewarmer: Prewarmer) -> tuple[web.AppRunner, str]:
    app = make_service_app(settings, store, prewarmer, prewarmer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def _to_workload_time(db: Path, clock: CompressedClock) -> None:
    """Restamp the request log in workload time.

    The proxy stamps each request with the wall clock, and the day ran `factor`
    times faster than that; the prewarmer's actions and the forecasts are already
    in workload time. Of the durations only the emulated loads were compressed,
    so only they are stretched back (a request's own few milliseconds of HTTP stay
    what they were). Restamped, the database reads like the day it played, for
    `prewarm sql`, the status page and `prewarm replay` alike.
    """
    con = duckdb.connect(str(db))
    try:
        params = {"f": clock.factor, "t0": clock.t0, "w0": clock.epoch0}
        con.execute("""
            UPDATE requests SET ts_start = to_timestamp($t0 + (epoch(ts_start) - $w0) * $f),
                                ts_end = to_timestamp($t0 + (epoch(ts_end) - $w0) * $f),
                                ttft_ms = ttft_ms + coalesce(load_ms, 0) * ($f - 1),
                                total_ms = total_ms + coalesce(load_ms, 0) * ($f - 1),
                                load_ms = load_ms * $f""", params)
        con.execute("UPDATE prewarm_actions SET duration_ms = duration_ms * $f WHERE action IN ('load', 'unload')",
                    {"f": clock.factor})
    finally:
        con.close()


def _print_sql(store: Store, title: str, sql: str) -> None:
    df = store.read_df(sql)
    _say(f"\n{title}\n  SQL: {' '.join(sql.split())}")
    _say("  " + df.to_string(index=False).replace("\n", "\n  "))


async def _demo(workdir: Path, plan: DemoPlan) -> int:
    catalog = load_catalog(sample_catalog_path())
    _say("prewarm demo — on the built-in Ollama EMULATOR (no GPU, no Ollama needed); "
         f"time compressed {plan.compress:.0f}x, durations below are in workload time")
    _say(f"workdir: {workdir}")

    events = demo_workload(plan, catalog)
    live_start = float(np.floor(events["ts"].iloc[-1] / DAY_S) * DAY_S)
    history = events[events["ts"] < live_start].reset_index(drop=True)
    live = events[events["ts"] >= live_start].reset_index(drop=True)
    total = sum(e.size_bytes for e in catalog)
    _say(f"\n1. workload: {len(events)} requests from {plan.users} users to {events['model'].nunique()} models "
         f"over {plan.days} days (Zipf popularity, office hours, weekends, per-user favourites)")
    _say(f"   the models need {format_size(total)} of VRAM together; the budget is {format_size(plan.budget)}")

    _say(f"\n2. training the forecaster on the first {plan.days - 1} days (worker process) ...")
    params = ForecastParams(window_s=plan.window_s, horizon=plan.horizon)
    t = time.monotonic()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=1) as pool:
        forecaster = await loop.run_in_executor(pool, _fit, history, live_start, params)
    methods = pd.Series(forecaster.fit_report.get("methods", {})).value_counts()
    shown = ", ".join(f"{name} for {n} model{'s' if n != 1 else ''}" for name, n in methods.items())
    _say(f"   trained in {time.monotonic() - t:.1f} s" + (f"; forecast by {shown}" if shown else ""))

    emu_port = free_port()
    emulator_log = workdir / "emulator.log"  # why it failed, if it does
    with emulator_log.open("wb") as log_file:  # the child has its own copy of the file
        emulator = subprocess.Popen(
            [*PREWARM_CMD, "emulate", "--listen", f"127.0.0.1:{emu_port}",
             "--catalog", str(sample_catalog_path()), "--vram", str(plan.emulator_vram),
             "--time-scale", repr(1.0 / plan.compress), "--tokens-per-second", "5000"],
            stdout=subprocess.DEVNULL, stderr=log_file,
        )
    upstream = f"http://127.0.0.1:{emu_port}"
    db = workdir / "demo.duckdb"
    settings = Settings(upstream=upstream, db=str(db), vram_budget=plan.budget, vram_reserve=0,
                        ps_refresh=0.1, log_flush_interval=0.2)
    store = Store(settings.db, settings)
    runner: web.AppRunner | None = None
    prewarmer: Prewarmer | None = None
    clock = CompressedClock(live_start, plan.compress)
    try:
        try:
            await asyncio.to_thread(wait_http, upstream + "/api/version", emulator, 30.0, emulator_log)
        except ProcessFailed as exc:
            last = [line for line in str(exc).splitlines() if line.strip()][-1]
            raise CommandError(f"the demo's emulator did not start: {last} (its whole log: {emulator_log})") from None
        await asyncio.to_thread(store.open)
        prewarmer = Prewarmer(settings, OllamaBackend(upstream, catalog), store, catalog=catalog, clock=clock.now)
        await prewarmer.start()
        runner, proxy_url = await _serve_proxy(settings, store, prewarmer)
        day = LiveDay(plan, live, history, forecaster, prewarmer, store, proxy_url, clock)
        _say(f"\n3. playing day {plan.days} live: {len(live)} requests through the proxy ({proxy_url}) to "
             f"`prewarm emulate` ({upstream}), planning every {plan.window_s / 60:.0f} min "
             f"(~{len(live) and (live['ts'].iloc[-1] - live_start) / plan.compress:.0f} s of wall time) ...")
        await day.run()
        _say(f"   sent {day.sent} requests ({day.failed} failed), {day.plans} plans carried out")
    finally:
        if runner is not None:
            await runner.cleanup()
        if prewarmer is not None:
            await prewarmer.stop()
        await store.close()
        emulator.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            emulator.wait(10)
    await asyncio.to_thread(_to_workload_time, db, clock)

    _say("\n4. what the request log says (DuckDB, the same SQL works with `prewarm sql --db "
         f"{db}`):")
    ro = Store(str(db), settings)
    await asyncio.to_thread(ro.open)
    try:
        _print_sql(ro, "requests and cold starts per model", """
            SELECT model, count(*) AS requests, count(*) FILTER (WHERE cold) AS cold_starts,
                   round(100.0 * count(*) FILTER (WHERE cold) / count(*), 1) AS cold_pct,
                   round(median(load_ms) FILTER (WHERE cold) / 1000, 1) AS median_cold_load_s
            FROM requests GROUP BY model ORDER BY requests DESC""")
        _print_sql(ro, "what the prewarmer did (a skip is a planned load with no room for it at that moment)", """
            SELECT action, CASE WHEN ok THEN 'done' WHEN error LIKE 'skipped:%' THEN 'skipped' ELSE 'failed' END
                   AS result, count(*) AS n
            FROM prewarm_actions GROUP BY ALL ORDER BY action, result""")
        planned_loads = "SELECT ts, model FROM prewarm_actions WHERE action = 'load' AND ok AND reason LIKE 'prewarm:%'"
        planned_next = f"""
            WITH loads AS ({planned_loads})
            SELECT l.model, l.ts AS loaded_at, r.ts_start AS next_request_at, r.user_id, r.cold
            FROM loads l
            JOIN LATERAL (SELECT * FROM requests r WHERE r.model = l.model AND r.ts_start > l.ts
                          ORDER BY r.ts_start LIMIT 1) r ON true"""
        hits = ro.read_df(f"""
            SELECT (SELECT count(*) FROM ({planned_loads})) AS planned_loads,
                   count(*) FILTER (WHERE NOT cold) AS next_request_warm,
                   count(*) FILTER (WHERE cold) AS unloaded_before_it
            FROM ({planned_next})""").iloc[0]
        loads, warm, gone = int(hits["planned_loads"]), int(hits["next_request_warm"]), int(hits["unloaded_before_it"])
        _say(f"\nprewarms at work: {loads} loads the forecast asked for; the model's next request found it warm "
             f"after {warm} of them ({100.0 * warm / max(loads, 1):.0f} %).")
        _say(f"  In {gone} the model was unloaded again before its next request (another model was asked for "
             "and the budget holds only some of them at once);")
        _say(f"  after the other {loads - warm - gone} no request for it came that day: a forecast is a "
             "chance, and the planner loads only while the budget has room that nothing likelier needs.")
        _print_sql(ro, "three of them", f"SELECT * FROM ({planned_next}) WHERE NOT cold ORDER BY loaded_at LIMIT 3")
        live_row = ro.read_df("SELECT count(*) AS n, count(*) FILTER (WHERE cold) AS cold FROM requests").iloc[0]
    finally:
        await ro.close()

    _say(f"\n5. the same day replayed in the simulator (budget {format_size(plan.budget)}, scored: day {plan.days} only;"
         " forecast trains on the days before it) ...")
    trace = frame_to_trace(events, source="demo workload")
    span = Span(live_start, float(events["ts"].iloc[-1]) + 1.0)
    costs = ModelCosts.from_catalog(trace, catalog)
    results = await asyncio.to_thread(run_replays, trace, costs, [plan.budget], [*BASELINES, "forecast", "oracle"], span)
    _say(to_table(results))
    by_name = {r.policy: r for r in results}
    best = min((r for r in results if r.policy not in ("forecast", "oracle")), key=lambda r: r.cold_starts)
    n, cold = int(live_row["n"]), int(live_row["cold"])
    _say(f"\nlive, with prewarm (emulator): {cold} cold starts in {n} requests ({100.0 * cold / max(n, 1):.1f} %)")
    for label, r in (("prewarm's forecast policy (simulated)", by_name["forecast"]),
                     (f"the best reactive policy here, {best.policy} (simulated)", best),
                     ("Ollama's own keep-alive (simulated)", by_name["ollama"])):
        _say(f"{label}: {r.cold_starts} cold starts in {r.requests} requests ({100.0 * r.cold_start_rate:.1f} %), "
             f"{r.vram_gb_hours:.0f} GB-hours of VRAM held")
    _say(f"\nThe demo's database is kept: {db}\n  (times in it are workload time; `prewarm sql --db {db} "
         "\"SELECT * FROM v_cold_starts LIMIT 5\"` reads it; delete the folder when you are done)")
    _say("\nNext: `prewarm serve --upstream http://127.0.0.1:11434` in front of a real Ollama (its status page is "
         "at /prewarm/ui), `prewarm replay --trace your-log.duckdb` on your own traffic.")
    return 0


def run(args: argparse.Namespace) -> int:
    plan = DemoPlan.for_args(args.quick)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="prewarm-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_demo(workdir, plan))
