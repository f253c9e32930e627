"""A slice of a workload replayed through real HTTP against llama.cpp's real router, and the simulator on the same slice.

Four setups, each on a fresh router serving the models of `bench/llama_server.py models`:

- **router**: the router alone with its own eviction, `--models-max K`, K the
  largest count whose K largest models fit the budget (what a user runs today);
- **prewarm, no forecaster**: `prewarm serve --upstream-kind llamacpp --no-schedule`
  in front of a router with `--models-max 0`: the planning state on recency alone;
- **prewarm + forecaster**: the same, handed the trained forecaster's forecasts
  (`POST /prewarm/plan`) at each of the slice's windows, `vram_cost` 0;
- **prewarm + forecaster, vram_cost C**: the same at the cost stated by
  `--vram-cost` (default 300, the top of the issue's sweep grid, fixed before any run).

The slice is time-compressed by a stated factor (its requests keep their order and
relative spacing, C times faster). Each request is a one-token chat completion
sent at its compressed time. Per setup it prints requests, cold starts, TTFT p50
and p99 and the GB-seconds of loaded models (the router's `GET /models`, sampled
every 50 ms). Cold, for the router alone, is "the model was not loaded when the
request was sent" (from the same sampling; a model still `loading` is not loaded: the request waits for
it); for prewarm, the proxy's own `cold`, which counts a request that arrives while its model loads as cold
too (the simulator's rule).

The forecaster: `prewarm train --trace` on the uncompressed workload before the
slice, once per slice (no refit within it). Its windows (5 min of trace time) are
forecast from the trace's events before each window start, in trace time, which
is where its daily seasonality lives; the harness hands each window's rows to
`serve` at the window's compressed time with the window bounds compressed too (a
5-minute window lasts 300 / C seconds of wall time). `serve`'s own clock, request
log and scheduler run on wall time, so its scheduler stays off (`--no-schedule`)
and only the pushed forecasts reach its planner, through the route an outside
forecaster would use. The planner's one other time constant, the half-life of its
decayed request counts (6 h), is compressed by the same factor (`recency_half_life`
in serve's config, `--recency-half-life` in the replay): at 6 h of wall time it would
span months of the slice's trace time, and recency alone would become a count over
the whole run.

Then `prewarm replay` runs on the same compressed slice (the times each request
was sent at) with the load times measured on this router (median of three loads
per model) and prints simulated against live cold starts: the `router` policy
(least recently used past `--models-max K` models, as the router's unload_lru)
for the router alone, `forecast-recency` for prewarm without a forecaster, and
`forecast --forecasts <serve's database>` for the forecaster setups: the planning
object fed the forecasts `serve` logged, at the instants it logged them. For the
prewarm setups it simulates once more at the load times serve's prewarmer measured
during the run itself (median per model from `prewarm_actions`, the probe's where
it made none): loads made while requests are served are slower than on the idle
probe, and the second figure shows how much of the sim/live gap that is.
Calibration, on the first slice of the recency setups: the first stand-in for the
router was `lru` (by bytes), which simulated 60 cold starts where the live router
had 326: the router at `--models-max 1` holds one model whatever the budget, so
the simulator lacked the router's own rule, not a load time; the `router` policy
was added for it.

    python bench/live_replay.py --requests 500 --gap 0.4 --slice 3   # calibration slice; --slice 4 reports
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llama_server  # noqa: E402

from prewarm.backends.llamacpp import RESIDENT  # noqa: E402
from prewarm.forecast.artifacts import load_latest  # noqa: E402
from prewarm.forecast.series import before  # noqa: E402
from prewarm.localproc import PREWARM_CMD, clean_env, free_port, wait_http  # noqa: E402
from prewarm.planner import HALF_LIFE_S  # noqa: E402
from prewarm.workload import synth  # noqa: E402

WARMUP = 0.3  # the first 30 % of the slice's span fills the caches and is not scored, live or simulated
WINDOW_S, HORIZON = 300.0, 12  # serve's defaults (window 5m, horizon_windows 12), in trace time


def workload(n_models: int, seed: int) -> pd.DataFrame:
    """The synthetic workload (a week, 40 users), models named m0.. by popularity."""
    df = synth(models=n_models, users=40, days=7, seed=seed)
    names = {m: f"m{i}" for i, m in enumerate(df["model"].value_counts().index)}
    return df.assign(model=df["model"].map(names)).reset_index(drop=True)


def slice_of(df: pd.DataFrame, requests: int, slice_no: int) -> pd.DataFrame:
    """`requests` consecutive requests of the workload (slice `slice_no`)."""
    start = slice_no * requests
    if start + requests > len(df):
        raise SystemExit(f"the workload has {len(df)} requests: slice {slice_no} of {requests} does not fit")
    return df.iloc[start:start + requests].reset_index(drop=True)


class Router:
    def __init__(self, binary: Path, models_dir: Path, models_max: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("wb")
        self.proc = subprocess.Popen(llama_server.router_command(binary, models_dir, self.port, models_max),
                                     stdout=self.log, stderr=subprocess.STDOUT, env=clean_env())
        wait_http(self.url + "/models", self.proc)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def statuses(session: aiohttp.ClientSession, url: str) -> dict[str, str]:
    async with session.get(url + "/models") as r:
        return {m["id"]: m["status"]["value"] for m in (await r.json())["data"]}


async def measure_loads(router: Router, models: list[str], reps: int = 3) -> dict[str, float]:
    """Median seconds from POST /models/load to `loaded`, per model (each unloaded again after)."""
    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as s:
        for m in models:
            times = []
            for _ in range(reps):
                t0 = time.monotonic()
                await s.post(router.url + "/models/load", json={"model": m})
                while (await statuses(s, router.url))[m] != "loaded":
                    await asyncio.sleep(0.01)
                times.append(time.monotonic() - t0)
                await s.post(router.url + "/models/unload", json={"model": m})
                while (await statuses(s, router.url))[m] != "unloaded":
                    await asyncio.sleep(0.01)
            out[m] = statistics.median(times)
    return out


Push = tuple[float, list[dict[str, Any]]]  # a window start in trace time, and its forecast rows (trace time)


def forecast_pushes(events: pd.DataFrame, slice_df: pd.DataFrame, models_dir: Path,
                    window_s: float = WINDOW_S, horizon: int = HORIZON) -> list[Push]:
    """The trained forecaster's rows for every window start within the slice, from the events before it."""
    forecaster = load_latest(models_dir)
    ts0, ts1 = float(slice_df["ts"].iloc[0]), float(slice_df["ts"].iloc[-1])
    out: list[Push] = []
    for k in range(int(math.ceil(ts0 / window_s)), int(ts1 // window_s) + 1):
        x = k * window_s
        frame = forecaster.predict(before(events, x), x, horizon)
        out.append((x, [{"model": str(m), "window_start": float(a), "window_end": float(b),
                         "expected_requests": float(mu), "p_any": float(p)}
                        for m, a, b, mu, p in zip(frame["model"], frame["window_start"], frame["window_end"],
                                                  frame["expected_requests"], frame["p_any"], strict=True)]))
    return out


async def drive(slice_df: pd.DataFrame, compress: float, base: str, router_url: str,
                sizes: dict[str, int], pushes: Sequence[Push] = ()) -> dict[str, Any]:
    """Send the slice at its compressed times (and each forecast at its window's); sample the router's loaded
    set throughout. Returns the figures and ``epoch0``, the wall time the slice's first request stands for."""
    loaded: set[str] = set()  # holding memory (loading or loaded): the GB-seconds
    ready: set[str] = set()  # loaded: a request for any other model waits for a load, so it is cold
    gb_s = 0.0
    done = asyncio.Event()
    ttft: list[float] = []
    cold_seen: list[bool] = []
    pushed: list[int] = []

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        async def sample() -> None:
            nonlocal gb_s, loaded, ready
            last = time.monotonic()
            while not done.is_set():
                st = await statuses(s, router_url)
                now = time.monotonic()
                gb_s += sum(sizes[m] for m in loaded) / 1e9 * (now - last)
                loaded, last = {m for m, v in st.items() if v in RESIDENT}, now
                ready = {m for m, v in st.items() if v == "loaded"}
                await asyncio.sleep(0.05)

        async def one(i: int, model: str, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if i >= scored_from:
                cold_seen.append(model not in ready)
            t0 = time.monotonic()
            async with s.post(base + "/v1/chat/completions", json={
                    "model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
                    "temperature": 0}) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{model}: HTTP {r.status}")
            if i >= scored_from:
                ttft.append(time.monotonic() - t0)

        def wall(x: float) -> float:
            return epoch0 + (x - ts0) / compress

        async def push(x: float, rows: list[dict[str, Any]]) -> None:
            await asyncio.sleep(max(0.0, t_start + (x - ts0) / compress - time.monotonic()))
            body = {"run_id": "live-replay", "rows": [
                r | {"window_start": wall(r["window_start"]), "window_end": wall(r["window_end"])} for r in rows]}
            async with s.post(base + "/prewarm/plan", json=body) as r:
                if r.status != 200:
                    raise RuntimeError(f"POST /prewarm/plan: HTTP {r.status}: {await r.text()}")
            pushed.append(len(rows))

        rel = (slice_df["ts"] - slice_df["ts"].iloc[0]).to_numpy()
        scored_from = int((rel < WARMUP * rel[-1]).sum())  # the simulator's rule: the first 30 % of the span
        sampler = asyncio.create_task(sample())
        await asyncio.sleep(0.2)
        t_start = time.monotonic() + 0.5
        epoch0 = time.time() + (t_start - time.monotonic())
        ts0 = float(slice_df["ts"].iloc[0])
        await asyncio.gather(*(one(i, m, t_start + (float(ts) - ts0) / compress)
                               for i, (ts, m) in enumerate(zip(slice_df["ts"], slice_df["model"], strict=True))),
                             *(push(x, rows) for x, rows in pushes))
        done.set()
        await sampler
    ttft.sort()
    return {"requests": len(ttft), "cold_seen": sum(cold_seen), "ttft_p50": ttft[len(ttft) // 2],
            "ttft_p99": ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))], "gb_s": gb_s, "epoch0": epoch0,
            "forecasts_pushed": len(pushed)}


def simulate(slice_df: pd.DataFrame, compress: float, epoch0: float, tmp: Path, catalog: Path, budget: int,
             args: list[str]) -> int:
    """`prewarm replay` of the slice at the wall times its requests were sent at; the one policy's cold starts."""
    trace = tmp / "slice.csv"
    ts0 = float(slice_df["ts"].iloc[0])
    pd.DataFrame({"ts": epoch0 + (slice_df["ts"] - ts0) / compress, "model": slice_df["model"],
                  "user": slice_df["user"]}).to_csv(trace, index=False)
    done = subprocess.run(PREWARM_CMD + ["replay", "--trace", str(trace), "--catalog", str(catalog),
                                         "--vram-budget", str(budget), "--warmup", str(WARMUP),
                                         "--format", "json", *args],
                          capture_output=True, text=True, env=clean_env(), timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    rows = json.loads(done.stdout)
    rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
    [row] = rows
    return int(row["cold_starts"])


def loads_in_run(db: Path) -> dict[str, float]:
    """Median seconds of the loads serve's prewarmer made during the run, per model (``prewarm_actions``).

    The loads measured on the idle probe router are shorter than those made while
    requests are being served (two cores shared by router, serve and the driver);
    simulating at these shows how much of the sim/live gap is load time.
    """
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT model, median(duration_ms) / 1000 FROM prewarm_actions WHERE action = 'load' "
                           "AND ok AND vram_after > vram_before GROUP BY model").fetchall()
    finally:
        con.close()
    return {str(m): float(v) for m, v in rows}


def write_catalog(path: Path, models: list[str], sizes: dict[str, int], loads: dict[str, float]) -> Path:
    path.write_text("model,size_bytes,load_seconds\n" + "".join(f"{m},{sizes[m]},{loads[m]:.3f}\n" for m in models))
    return path


def train(history: pd.DataFrame, tmp: Path) -> Path:
    """`prewarm train --trace` on the workload before the slice (trace time); the artifacts' folder."""
    csv, models_dir = tmp / "history.csv", tmp / "models"
    history[["ts", "model", "user"]].to_csv(csv, index=False)
    done = subprocess.run(PREWARM_CMD + ["train", "--trace", str(csv), "--db", str(tmp / "train.duckdb"),
                                         "--models-dir", str(models_dir), "--no-progress"],
                          capture_output=True, text=True, env=clean_env(), timeout=900)
    if done.returncode != 0:
        raise RuntimeError("prewarm train: " + done.stderr[-2000:])
    return models_dir


@dataclass(frozen=True)
class Setup:
    name: str
    vram_cost: float | None  # None: the router alone
    forecaster: bool = False

    def replay_args(self, models_max: int, db: Path, half_life_s: float) -> list[str]:
        if self.vram_cost is None:
            return ["--policy", "router", "--models-max", str(models_max)]
        recency = ["--recency-half-life", f"{half_life_s:.6g}s"]
        if not self.forecaster:
            return ["--policy", "forecast-recency", *recency]
        return ["--policy", "forecast", "--forecasts", str(db), "--vram-cost", f"{self.vram_cost:g}", *recency]

    def policy(self) -> str:
        if self.vram_cost is None:
            return "router"
        return "forecast" if self.forecaster else "forecast-recency"


def run_prewarm(setup: Setup, binary: Path, cache: Path, tmp: Path, budget: int, df: pd.DataFrame,
                compress: float, half_life_s: float, sizes: dict[str, int], pushes: list[Push]
                ) -> tuple[dict[str, Any], Path]:
    """One prewarm setup on a fresh router at --models-max 0; its figures and serve's database."""
    tag = setup.name.replace(" ", "-").replace(",", "")
    r = Router(binary, cache, 0, tmp / f"router-{tag}.log")
    db = tmp / f"{tag}.duckdb"
    config = tmp / f"{tag}.toml"
    config.write_text(f"recency_half_life = {half_life_s:.6g}  # serve's 6 h, compressed like the slice\n")
    port = free_port()
    serve = subprocess.Popen(PREWARM_CMD + [
        "serve", "--upstream-kind", "llamacpp", "--upstream", r.url, "--listen", f"127.0.0.1:{port}",
        "--db", str(db), "--vram-budget", str(budget), "--no-schedule", "--vram-cost", f"{setup.vram_cost:g}",
        "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=clean_env() | {"PREWARM_PS_REFRESH": "0.1"})
    try:
        wait_http(f"http://127.0.0.1:{port}/prewarm/health", serve)
        figures = asyncio.run(drive(df, compress, f"http://127.0.0.1:{port}", r.url, sizes,
                                    pushes if setup.forecaster else []))
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=60)
        r.close()
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT cold FROM requests WHERE endpoint = '/v1/chat/completions' "
                       "ORDER BY ts_start").fetchall()
    con.close()
    figures["cold"] = sum(bool(c) for (c,) in rows[len(rows) - figures["requests"]:])
    return figures, db


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=6, help="GGUF models of growing size (default 6)")
    p.add_argument("--requests", type=int, default=400, help="requests in the slice (default 400)")
    p.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    p.add_argument("--slice", type=int, default=3, help="which run of --requests consecutive requests (default 3)")
    p.add_argument("--gap", type=float, default=0.5,
                   help="mean seconds between requests after compression (sets the factor; default 0.5)")
    p.add_argument("--budget-share", type=float, default=0.35,
                   help="budget as a share of all models' bytes (default 0.35)")
    p.add_argument("--vram-cost", type=float, default=300.0,
                   help="the last setup's vram_cost, seconds of waiting per GB-hour of compressed time (default 300)")
    args = p.parse_args()

    binary = llama_server.build(os.cpu_count() or 2)
    cache = Path(tempfile.gettempdir()) / f"prewarm-live-models-{args.models}"
    llama_server.write_models(cache, args.models)
    models = [f"m{i}" for i in range(args.models)]
    full = workload(args.models, args.seed)
    df = slice_of(full, args.requests, args.slice)
    span = float(df["ts"].iloc[-1] - df["ts"].iloc[0])
    compress = span / (args.gap * (len(df) - 1))
    half_life_s = HALF_LIFE_S / compress  # the planner's one time constant, compressed like the slice
    setups = [Setup("router alone", None), Setup("prewarm, no forecaster", 0.0),
              Setup("prewarm + forecaster", 0.0, True),
              Setup(f"prewarm + forecaster, vram_cost {args.vram_cost:g}", args.vram_cost, True)]

    with tempfile.TemporaryDirectory(prefix="prewarm-live-") as tmp_s:
        tmp = Path(tmp_s)
        history = full[full["ts"] < float(df["ts"].iloc[0])]
        t0 = time.monotonic()
        pushes = forecast_pushes(full, df, train(history, tmp))
        print(f"forecaster: trained on {len(history)} requests before the slice "
              f"({(float(df['ts'].iloc[0]) - float(full['ts'].iloc[0])) / 86400:.2f} days); "
              f"{len(pushes)} windows forecast ({time.monotonic() - t0:.0f} s)")
        probe = Router(binary, cache, 0, tmp / "probe.log")
        try:
            loads = asyncio.run(measure_loads(probe, models))
            from prewarm.backends.llamacpp import LlamaCppBackend
            from prewarm.catalog import Catalog

            async def sizes_of() -> dict[str, int]:
                b = LlamaCppBackend(probe.url, Catalog({}))
                try:
                    return await b.sizes()
                finally:
                    await b.close()
            sizes = asyncio.run(sizes_of())
        finally:
            probe.close()
        total = sum(sizes.values())
        budget = int(total * args.budget_share)
        biggest = sorted(sizes.values(), reverse=True)
        if biggest[0] > budget:
            raise SystemExit(f"a {args.budget_share:g} budget share ({budget / 1e9:.2f} GB) is smaller than the "
                             f"largest model ({biggest[0] / 1e9:.2f} GB): raise --budget-share")
        k = max(i for i in range(1, len(biggest) + 1) if sum(biggest[:i]) <= budget)
        print(f"{args.models} models, {total / 1e9:.2f} GB in all; budget {budget / 1e9:.2f} GB; router "
              f"--models-max {k}; slice {args.slice} of seed {args.seed}: {len(df)} requests over "
              f"{span / 3600:.2f} h, compressed {compress:.0f}x to {span / compress:.0f} s")
        print("load seconds measured: " + ", ".join(f"{m} {loads[m]:.2f}" for m in models))
        catalog = write_catalog(tmp / "catalog.csv", models, sizes, loads)

        live: list[tuple[Setup, dict[str, Any], int, int | None]] = []
        for setup in setups:
            db = tmp / "none.duckdb"
            if setup.vram_cost is None:
                r = Router(binary, cache, k, tmp / "router.log")
                try:
                    figures = asyncio.run(drive(df, compress, r.url, r.url, sizes))
                finally:
                    r.close()
                figures["cold"] = figures["cold_seen"]
            else:
                figures, db = run_prewarm(setup, binary, cache, tmp, budget, df, compress, half_life_s, sizes,
                                          pushes)
            sim = simulate(df, compress, figures["epoch0"], tmp, catalog, budget, setup.replay_args(k, db, half_life_s))
            sim_run = None
            if setup.vram_cost is not None:
                in_run = loads | loads_in_run(db)
                print(f"{setup.name}: load seconds in the run: "
                      + ", ".join(f"{m} {in_run[m]:.2f}" for m in models), flush=True)
                sim_run = simulate(df, compress, figures["epoch0"], tmp,
                                   write_catalog(tmp / "catalog-run.csv", models, sizes, in_run), budget,
                                   setup.replay_args(k, db, half_life_s))
            live.append((setup, figures, sim, sim_run))
            print(f"{setup.name}: {figures['cold']} cold live, {sim} simulated, {sim_run} at the run's loads",
                  flush=True)

    print("\n| setup | requests scored | cold (live) | cold (simulated, policy) | sim/live "
          "| simulated at the run's loads | sim/live | TTFT p50 s | TTFT p99 s | GB-s held |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    def ratio(x: int | None, cold: int) -> str:
        return f"{x / cold:.2f}" if cold and x is not None else "-"

    for setup, v, sim, sim_run in live:
        print(f"| {setup.name} | {v['requests']} | {v['cold']} | {sim} (`{setup.policy()}`) | {ratio(sim, v['cold'])} | "
              f"{'-' if sim_run is None else sim_run} | {ratio(sim_run, v['cold'])} | "
              f"{v['ttft_p50']:.3f} | {v['ttft_p99']:.3f} | {v['gb_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
