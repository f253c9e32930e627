"""Soak: many concurrent streaming clients through `prewarm serve` for a while, then a count.

Three processes, as in production: the emulator (`prewarm emulate`), the proxy
(`prewarm serve --no-schedule`, a real DuckDB file in a temp dir) and the client
load generator (this script re-run with --client), so the clients never share the
proxy's event loop or CPU accounting. Each client streams /api/chat and
/v1/chat/completions (NDJSON and SSE) back to back, with a short pause, until the
duration is over; it never starts a request after that, and no request may take
longer than --request-timeout (a hang shows up as "timed out", not as a stuck run).

While it runs, this process samples the proxy's RSS (/proc/PID/status VmRSS) and
its event-loop lag (GET /prewarm/health, `loop_lag`). At the end it sends SIGTERM,
waits for the proxy to flush, and counts rows in `requests` against requests sent.

    .venv/bin/python bench/load_soak.py                           # 1000 clients x 600 s
    .venv/bin/python bench/load_soak.py --clients 1000 --duration 120

Outcome classes per request: `ok` (200 and the stream's final chunk arrived),
`refused` (a 4xx/5xx whose body is an error in the API's own shape), `bad` (any
other answer: a stream cut short, a body that is not the API's error shape) and
`timed_out` / `conn_error` (no answer). A healthy proxy has only ok and refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp

from prewarm.localproc import free_port, wait_http

MODELS = ("qwen2.5:0.5b", "llama3.2:1b", "llama3.2:3b")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------- client process


def _is_api_error(status: int, body: bytes, openai: bool) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    err = doc.get("error") if isinstance(doc, dict) else None
    if openai:
        return isinstance(err, dict) and isinstance(err.get("message"), str)
    return isinstance(err, str)


async def _one(session: aiohttp.ClientSession, base: str, i: int, tokens: int, timeout: float) -> tuple[str, int, float]:
    openai = i % 2 == 1
    model = MODELS[i % len(MODELS)]
    msgs = [{"role": "user", "content": f"soak {i}"}]
    if openai:
        url = base + "/v1/chat/completions"
        body = {"model": model, "messages": msgs, "stream": True, "max_tokens": tokens}
        final = b"data: [DONE]"
    else:
        url = base + "/api/chat"
        body = {"model": model, "messages": msgs, "stream": True, "options": {"num_predict": tokens}}
        final = b'"done":true'
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with session.post(url, json=body, headers={"X-Prewarm-User": f"u{i % 50}"}) as r:
                data = await r.read()
                status = r.status
    except TimeoutError:
        return "timed_out", 0, time.perf_counter() - t0
    except aiohttp.ClientPayloadError:
        return "bad", -1, time.perf_counter() - t0
    except (aiohttp.ClientError, OSError):
        return "conn_error", 0, time.perf_counter() - t0
    dt = time.perf_counter() - t0
    if status == 200:
        return ("ok" if final in data else "bad"), status, dt
    return ("refused" if _is_api_error(status, data, openai) else "bad"), status, dt


async def client_main(base: str, clients: int, duration: float, tokens: int, pause: float, timeout: float) -> dict:
    outcomes: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    sent = 0
    stop_at = time.monotonic() + duration

    async def loop(k: int, session: aiohttp.ClientSession) -> None:
        nonlocal sent
        await asyncio.sleep(random.random() * min(5.0, duration / 4))  # ramp up over a few seconds
        i = k
        while time.monotonic() < stop_at:
            sent += 1
            kind, status, dt = await _one(session, base, i, tokens, timeout)
            outcomes[kind] += 1
            statuses[status] += 1
            latencies.append(dt)
            i += clients
            await asyncio.sleep(pause * (0.5 + random.random()))

    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(loop(k, session) for k in range(clients)))
    latencies.sort()
    def pick(q: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3) if latencies else None

    return {"sent": sent, "outcomes": dict(outcomes), "statuses": {str(k): v for k, v in statuses.items()},
            "latency_s": {"p50": pick(0.5), "p99": pick(0.99), "max": latencies[-1] if latencies else None}}


# ---------------------------------------------------------------- driver


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def health(base: str) -> dict | None:
    try:
        with OPENER.open(base + "/prewarm/health", timeout=10) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def drive(args: argparse.Namespace) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREWARM_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    prewarm = [sys.executable, "-m", "prewarm"]
    tmp = Path(tempfile.mkdtemp(prefix="prewarm-soak-"))
    db = tmp / "soak.duckdb"
    emu_port, proxy_port = free_port(), free_port()
    base = f"http://127.0.0.1:{proxy_port}"
    procs: list[subprocess.Popen] = []
    try:
        emu = subprocess.Popen(
            prewarm + ["emulate", "--listen", f"127.0.0.1:{emu_port}", "--vram", args.vram, "--time-scale",
                       str(args.time_scale), "--tokens-per-second", str(args.tps)],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "emulate.log", "w"), env=env)
        procs.append(emu)
        wait_http(f"http://127.0.0.1:{emu_port}/api/version", emu)
        serve = subprocess.Popen(
            prewarm + ["serve", "--upstream", f"http://127.0.0.1:{emu_port}", "--listen", f"127.0.0.1:{proxy_port}",
                       "--db", str(db), "--no-schedule"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "w"), env=env)
        procs.append(serve)
        wait_http(base + "/prewarm/health", serve)
        rss0 = rss_kb(serve.pid)

        out_file = tmp / "clients.json"
        client = subprocess.Popen(
            [sys.executable, __file__, "--client", base, "--clients", str(args.clients), "--duration",
             str(args.duration), "--tokens", str(args.tokens), "--pause", str(args.pause),
             "--request-timeout", str(args.request_timeout), "--out", str(out_file)], env=env)
        procs.append(client)
        rss: list[tuple[float, int]] = []
        lag_p99: list[float] = []
        worst_ms = 0.0
        t0 = time.monotonic()
        next_health = t0
        while client.poll() is None:
            now = time.monotonic()
            kb = rss_kb(serve.pid)
            if kb is not None:
                rss.append((now - t0, kb))
            if now >= next_health:  # the ring holds the last 60 s; read it often enough to miss nothing
                h = health(base)
                if h and h.get("loop_lag") and h["loop_lag"]["samples"]:
                    lag_p99.append(h["loop_lag"]["p99_ms"])
                    worst_ms = max(worst_ms, h["loop_lag"]["worst_ms"])
                next_health = now + 20.0
            time.sleep(1.0)
        h = health(base)
        if h and h.get("loop_lag") and h["loop_lag"]["samples"]:
            lag_p99.append(h["loop_lag"]["p99_ms"])
            worst_ms = max(worst_ms, h["loop_lag"]["worst_ms"])
        counters = (h or {}).get("store", {})
        if client.returncode != 0:
            raise SystemExit(f"client process failed with status {client.returncode}")
        result = json.loads(out_file.read_text())

        serve.send_signal(signal.SIGTERM)
        serve_rc = serve.wait(timeout=120)
        import duckdb

        con = duckdb.connect(str(db), read_only=True)
        rows, by_status = con.execute(
            "SELECT count(*), histogram(status) FROM requests").fetchone()
        con.close()
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()

    warm = [kb for t, kb in rss if t >= min(30.0, args.duration * 0.25)] or [kb for _, kb in rss]
    report = {
        "clients": args.clients,
        "duration_s": args.duration,
        "requests_sent": result["sent"],
        "outcomes": result["outcomes"],
        "statuses": result["statuses"],
        "latency_s": result["latency_s"],
        "rows_logged": rows,
        "rows_by_status": {str(k): v for k, v in (by_status or {}).items()},
        "rows_missing": result["sent"] - rows,
        "serve_exit": serve_rc,
        "store_counters_before_sigterm": counters,
        "rss_mb": {"idle": round((rss0 or 0) / 1024, 1), "warm": round(warm[0] / 1024, 1),
                   "end": round(warm[-1] / 1024, 1), "max": round(max(warm) / 1024, 1),
                   "growth_after_warmup": round((warm[-1] - warm[0]) / 1024, 1)},
        "loop_lag_ms": {"p99_worst_60s_window": max(lag_p99) if lag_p99 else None,
                        "p99_windows": lag_p99, "worst": worst_ms},
    }
    print(json.dumps(report, indent=2))
    good = set(result["outcomes"]) <= {"ok", "refused"} and rows == result["sent"] and serve_rc == 0
    print("PASS: every request answered or refused clearly, every request a row" if good else "FAIL", flush=True)
    return 0 if good else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per reply")
    ap.add_argument("--tps", type=float, default=20.0, help="emulated tokens per second per stream")
    ap.add_argument("--pause", type=float, default=1.0, help="mean pause between a client's requests (s)")
    ap.add_argument("--vram", default="24GB")
    ap.add_argument("--time-scale", type=float, default=0.01, help="emulated load times x this")
    ap.add_argument("--request-timeout", type=float, default=180.0, help="a request taking longer counts as a hang")
    ap.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        res = asyncio.run(client_main(args.client, args.clients, args.duration, args.tokens, args.pause,
                                      args.request_timeout))
        Path(args.out).write_text(json.dumps(res))
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
