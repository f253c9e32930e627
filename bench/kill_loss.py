"""Rows lost when `prewarm serve` is killed with SIGKILL under load, measured per request.

The request log is buffered: the writer thread flushes every `log_flush_interval`
(default 1 s), so a SIGKILL can lose at most the rows queued since the last flush
(and the batch being written). This script proves that bound request by request:

1. starts `prewarm emulate` and `prewarm serve --no-schedule` (a real DuckDB file);
2. runs --clients concurrent clients sending short /api/generate requests, each
   with a unique X-Prewarm-User, and notes when each one was answered (200);
3. after --duration seconds sends SIGKILL to serve, in the middle of the load;
4. opens the database the way the next start does (Store.open: WAL replay, spilled
   rows loaded back) and checks which answered requests have a row.

A request answered more than `log_flush_interval + slack` before the kill must have
a row (`lost_before_window` must be 0); the others are the unflushed tail.

    .venv/bin/python bench/kill_loss.py [--duration 10] [--clients 16] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_soak import free_port, wait_http  # noqa: E402


async def load(base: str, clients: int, duration: float, kill) -> tuple[dict[str, float], float, int]:
    """Answered request ids -> monotonic answer time; the kill time; requests sent."""
    answered: dict[str, float] = {}
    sent = 0
    killed_at: list[float] = []
    stop = asyncio.Event()

    async def client(k: int, session: aiohttp.ClientSession) -> None:
        nonlocal sent
        n = 0
        while not stop.is_set():
            uid = f"c{k}-{n}"
            n += 1
            sent += 1
            try:
                async with session.post(base + "/api/generate", headers={"X-Prewarm-User": uid}, json={
                        "model": "qwen2.5:0.5b", "prompt": "k", "stream": False,
                        "options": {"num_predict": 1}}) as r:
                    await r.read()
                    if r.status == 200:
                        answered[uid] = time.monotonic()
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(0.01)

    async def killer() -> None:
        await asyncio.sleep(duration)
        killed_at.append(time.monotonic())
        kill()
        await asyncio.sleep(0.3)  # clients see the dead service, then stop
        stop.set()

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(killer(), *(client(k, session) for k in range(clients)))
    return answered, killed_at[0], sent


def logged_users(db: Path) -> set[str]:
    """What the next `prewarm serve` start would find: WAL replayed, spill file loaded back."""
    from prewarm.config import Settings
    from prewarm.store.writer import Store

    store = Store(str(db), Settings(db=str(db)))
    store.open()
    try:
        _, rows = store._query_sync("SELECT user_id FROM requests")
    finally:
        store.close_sync()
    return {r[0] for r in rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load before the SIGKILL")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--flush-interval", type=float, default=1.0, help="serve's log_flush_interval (s)")
    ap.add_argument("--slack", type=float, default=1.0, help="seconds allowed for writing one batch")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREWARM_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PREWARM_LOG_FLUSH_INTERVAL"] = str(args.flush_interval)
    prewarm = [sys.executable, "-m", "prewarm"]
    tmp = Path(tempfile.mkdtemp(prefix="prewarm-kill-"))
    db = tmp / "kill.duckdb"
    emu_port, proxy_port = free_port(), free_port()
    base = f"http://127.0.0.1:{proxy_port}"
    emu = subprocess.Popen(
        prewarm + ["emulate", "--listen", f"127.0.0.1:{emu_port}", "--vram", "24GB", "--time-scale", "0.001",
                   "--tokens-per-second", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    serve = None
    try:
        wait_http(f"http://127.0.0.1:{emu_port}/api/version", emu)
        serve = subprocess.Popen(
            prewarm + ["serve", "--upstream", f"http://127.0.0.1:{emu_port}", "--listen", f"127.0.0.1:{proxy_port}",
                       "--db", str(db), "--no-schedule"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "w"), env=env)
        wait_http(base + "/prewarm/health", serve)
        answered, t_kill, sent = asyncio.run(load(base, args.clients, args.duration,
                                                  lambda: serve.send_signal(signal.SIGKILL)))
        serve.wait(timeout=30)
    finally:
        for p in (serve, emu):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(timeout=30)

    users = logged_users(db)
    window = args.flush_interval + args.slack
    lost = {u: t for u, t in answered.items() if u not in users}
    before = [u for u, t in lost.items() if t < t_kill - window]
    first = min(answered.values()) if answered else t_kill
    rate = len(answered) / max(1e-9, t_kill - first)
    report = {
        "duration_s": args.duration,
        "clients": args.clients,
        "flush_interval_s": args.flush_interval,
        "requests_sent": sent,
        "answered_before_kill": len(answered),
        "rows_of_answered": len(answered) - len(lost),
        "rows_lost": len(lost),
        "requests_per_s": round(rate, 1),
        "lost_seconds_of_traffic": round(len(lost) / rate, 3) if rate else None,
        "answered_in_last_window": sum(1 for t in answered.values() if t >= t_kill - window),
        "window_s": window,
        "lost_before_window": len(before),
        "oldest_lost_s_before_kill": round(t_kill - min(lost.values()), 3) if lost else None,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))
        ok = report["lost_before_window"] == 0
        print("PASS: only the unflushed tail was lost" if ok else "FAIL: rows older than the flush window lost")
    return 0 if report["lost_before_window"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
