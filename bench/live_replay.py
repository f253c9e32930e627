"""A slice of a workload replayed through real HTTP against llama.cpp's real router, and the simulator on the same slice.

Two setups, each on a fresh router serving the models of `bench/llama_server.py models`:

- **router**: the router alone with its own eviction, `--models-max K`, K the
  largest count whose K largest models fit the budget (what a user runs today);
- **prewarm**: `prewarm serve --upstream-kind llamacpp --no-schedule` in front of a
  router with `--models-max 0`: the planning state on recency alone (no forecaster;
  see "what is not here" below), evicting and prefetching under the byte budget.

The slice is time-compressed by a stated factor (its requests keep their order and
relative spacing, C times faster). Each request is a one-token chat completion
sent at its compressed time. Per setup it prints requests, cold starts, TTFT p50
and p99 and the GB-seconds of loaded models (the router's `GET /models`, sampled
every 50 ms). Cold, for the router alone, is "the model was not loaded when the
request was sent" (from the same sampling); for prewarm, the proxy's own `cold`.

Then `prewarm replay` runs on the same compressed slice with the load times
measured on this router (median of three loads per model) and prints simulated
against live cold starts: the `router` policy (least recently used past
`--models-max K` models, as the router's unload_lru) stands for the router alone,
`forecast-recency` for prewarm (the same planning object, fed no forecaster).
Calibration, on slice 0: the first stand-in for the router was `lru` (by bytes), which
simulated 60 cold starts where the live router had 326: the router at
`--models-max 1` holds one model whatever the budget, so the simulator lacked the
router's own rule, not a load time; the `router` policy was added for it.

What is not here: the setups with the forecaster (`serve` with a schedule, trained
by `prewarm train --trace` before the slice). prewarm's clock, its request log and
its forecast windows run on wall time; a compressed slice would need all three
compressed together.

    python bench/live_replay.py --requests 500 --seed 1 --slice 0   # calibration slice; --slice 1 reports
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llama_server  # noqa: E402

from prewarm.backends.llamacpp import RESIDENT  # noqa: E402
from prewarm.localproc import PREWARM_CMD, clean_env, free_port, wait_http  # noqa: E402
from prewarm.workload import synth  # noqa: E402

WARMUP = 0.3  # the first 30 % of the slice's span fills the caches and is not scored, live or simulated


def workload(n_models: int, requests: int, seed: int, slice_no: int) -> pd.DataFrame:
    """`requests` consecutive requests of a synthetic workload (slice `slice_no`), models named m0.. by popularity."""
    df = synth(models=n_models, users=40, days=7, seed=seed)
    names = {m: f"m{i}" for i, m in enumerate(df["model"].value_counts().index)}
    df = df.assign(model=df["model"].map(names)).reset_index(drop=True)
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


async def drive(slice_df: pd.DataFrame, compress: float, base: str, router_url: str,
                sizes: dict[str, int]) -> dict[str, Any]:
    """Send the slice at its compressed times; sample the router's loaded set throughout."""
    loaded: set[str] = set()
    gb_s = 0.0
    done = asyncio.Event()
    ttft: list[float] = []
    cold_seen: list[bool] = []

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        async def sample() -> None:
            nonlocal gb_s, loaded
            last = time.monotonic()
            while not done.is_set():
                st = await statuses(s, router_url)
                now = time.monotonic()
                gb_s += sum(sizes[m] for m in loaded) / 1e9 * (now - last)
                loaded, last = {m for m, v in st.items() if v in RESIDENT}, now
                await asyncio.sleep(0.05)

        async def one(i: int, model: str, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if i >= scored_from:
                cold_seen.append(model not in loaded)
            t0 = time.monotonic()
            async with s.post(base + "/v1/chat/completions", json={
                    "model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
                    "temperature": 0}) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{model}: HTTP {r.status}")
            if i >= scored_from:
                ttft.append(time.monotonic() - t0)

        rel = (slice_df["ts"] - slice_df["ts"].iloc[0]).to_numpy()
        scored_from = int((rel < WARMUP * rel[-1]).sum())  # the simulator's rule: the first 30 % of the span
        sampler = asyncio.create_task(sample())
        await asyncio.sleep(0.2)
        t_start = time.monotonic() + 0.5
        ts0 = float(slice_df["ts"].iloc[0])
        await asyncio.gather(*(one(i, m, t_start + (float(ts) - ts0) / compress)
                               for i, (ts, m) in enumerate(zip(slice_df["ts"], slice_df["model"], strict=True))))
        done.set()
        await sampler
    ttft.sort()
    return {"requests": len(ttft), "cold_seen": sum(cold_seen), "ttft_p50": ttft[len(ttft) // 2],
            "ttft_p99": ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))], "gb_s": gb_s}


def simulate(trace: Path, catalog: Path, budget: int, models_max: int) -> dict[str, int]:
    done = subprocess.run(PREWARM_CMD + ["replay", "--trace", str(trace), "--catalog", str(catalog),
                                         "--vram-budget", str(budget), "--policy", "router,forecast-recency",
                                         "--models-max", str(models_max),
                                         "--warmup", str(WARMUP), "--format", "json"],
                          capture_output=True, text=True, env=clean_env(), timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    rows = json.loads(done.stdout)
    rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
    return {r["policy"]: int(r["cold_starts"]) for r in rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=6, help="GGUF models of growing size (default 6)")
    p.add_argument("--requests", type=int, default=400, help="requests in the slice (default 400)")
    p.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    p.add_argument("--slice", type=int, default=0, help="which run of --requests consecutive requests (default 0)")
    p.add_argument("--gap", type=float, default=0.5,
                   help="mean seconds between requests after compression (sets the factor; default 0.5)")
    p.add_argument("--budget-share", type=float, default=0.35,
                   help="budget as a share of all models' bytes (default 0.35)")
    args = p.parse_args()

    binary = llama_server.build(os.cpu_count() or 2)
    cache = Path(tempfile.gettempdir()) / f"prewarm-live-models-{args.models}"
    llama_server.write_models(cache, args.models)
    models = [f"m{i}" for i in range(args.models)]
    df = workload(args.models, args.requests, args.seed, args.slice)
    span = float(df["ts"].iloc[-1] - df["ts"].iloc[0])
    compress = span / (args.gap * (len(df) - 1))

    with tempfile.TemporaryDirectory(prefix="prewarm-live-") as tmp_s:
        tmp = Path(tmp_s)
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

        live: dict[str, dict[str, Any]] = {}
        r = Router(binary, cache, k, tmp / "router.log")
        try:
            live["router"] = asyncio.run(drive(df, compress, r.url, r.url, sizes))
        finally:
            r.close()
        r = Router(binary, cache, 0, tmp / "router-p.log")
        db = tmp / "p.duckdb"
        port = free_port()
        serve = subprocess.Popen(PREWARM_CMD + [
            "serve", "--upstream-kind", "llamacpp", "--upstream", r.url, "--listen", f"127.0.0.1:{port}",
            "--db", str(db), "--vram-budget", str(budget), "--no-schedule"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=clean_env() | {"PREWARM_PS_REFRESH": "0.1"})
        try:
            wait_http(f"http://127.0.0.1:{port}/prewarm/health", serve)
            live["prewarm"] = asyncio.run(drive(df, compress, f"http://127.0.0.1:{port}", r.url, sizes))
        finally:
            serve.send_signal(signal.SIGINT)
            serve.wait(timeout=60)
            r.close()
        con = duckdb.connect(str(db), read_only=True)
        rows = con.execute("SELECT cold FROM requests WHERE endpoint = '/v1/chat/completions' "
                           "ORDER BY ts_start").fetchall()
        con.close()
        live["prewarm"]["cold"] = sum(bool(c) for (c,) in rows[len(rows) - live["prewarm"]["requests"]:])
        live["router"]["cold"] = live["router"]["cold_seen"]

        trace = tmp / "slice.csv"
        ts0 = float(df["ts"].iloc[0])
        pd.DataFrame({"ts": (df["ts"] - ts0) / compress, "model": df["model"],
                      "user": df["user"]}).to_csv(trace, index=False)
        catalog = tmp / "catalog.csv"
        catalog.write_text("model,size_bytes,load_seconds\n" + "".join(
            f"{m},{sizes[m]},{loads[m]:.3f}\n" for m in models))
        sim = simulate(trace, catalog, budget, k)

    print("\n| setup | requests scored | cold (live) | cold (simulated, policy) | sim/live | TTFT p50 s | TTFT p99 s "
          "| GB-s held |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for setup, policy in (("router", "router"), ("prewarm", "forecast-recency")):
        v = live[setup]
        s = sim.get(policy)
        ratio = f"{s / v['cold']:.2f}" if s is not None and v["cold"] else "-"
        print(f"| {setup} | {v['requests']} | {v['cold']} | {s} ({policy}) | {ratio} | {v['ttft_p50']:.3f} | "
              f"{v['ttft_p99']:.3f} | {v['gb_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
