"""The probe of round two (docs/reliability.md), re-run as benchmarks against real processes on loopback.

    .venv/bin/python bench/hardening_probe.py [--only surrogates,names,idle,hammer]

Four shapes, each against a fresh `prewarm emulate` + `prewarm serve`, each printed
next to the figure it must meet (its baseline in this run: the request count it
sent, the 20 MB growth limit, the 1 s answer, the VRAM budget):

* surrogates: 1,000 requests with a lone surrogate in the model name (three
  shapes: /api/generate, /v1/chat/completions, /api/show) interleaved with 10,000
  normal ones: every one must be a row, the 1,000 with status 400;
* names: two identical batches of 10,000 unique model names (within the 256-byte
  limit) that the upstream does not know: RSS growth over the second batch;
* idle: 1,100 idle connections held against a serve whose open-file limit is
  1,024: how long `/prewarm/health` takes to answer 200 on a new connection;
* hammer: 9 models, 32 clients, 800 requests, emulator 24 GB, budget 10 GB: the
  emulator's own record of its peak resident bytes against the budget.

Traffic goes to 127.0.0.1 only, every loop is bounded by its request count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

from prewarm.localproc import LOOPBACK, LocalStack, blast, generate_request

SURROGATES = [
    ("/api/generate", b'{"model": "\\ud800", "prompt": "hi", "stream": false}'),
    ("/v1/chat/completions", b'{"model": "x\\udc80y", "messages": [{"role": "user", "content": "hi"}]}'),
    ("/api/show", b'{"name": "\\udfff"}'),
]
HAMMER_MODELS = ["qwen2.5:0.5b", "llama3.2:1b", "llama3.2:3b", "phi3.5:3.8b", "mistral:7b", "qwen2.5:7b",
                 "llama3.1:8b", "gemma2:9b", "nomic-embed-text:latest"]


def surrogates(tmp: Path) -> list[str]:
    s = LocalStack(tmp)
    try:
        reqs = []
        for i in range(11_000):
            reqs.append(SURROGATES[i % 3] if i % 11 == 5 else generate_request("qwen2.5:0.5b"))
        t0 = time.perf_counter()
        statuses = asyncio.run(blast(s.url, reqs))
        took = time.perf_counter() - t0
        health, _ = s.request("GET", "/prewarm/health")
        rows = s.rows("SELECT count(*) AS n, count(*) FILTER (WHERE status = 400) AS bad FROM requests "
                      "WHERE endpoint <> '/api/version'")[0]
        rc, err = s.stop()
        return [f"surrogates: sent {len(reqs):,} ({statuses.count(400):,} answered 400) in {took:.1f} s; "
                f"rows {rows['n']:,} (baseline: {len(reqs):,}), status 400 rows {rows['bad']:,} (baseline: 1,000); "
                f"health {health}; serve exit {rc}, {'0 dropped' if '0 dropped' in err else 'rows dropped!'}"]
    finally:
        s.close()


def names(tmp: Path) -> list[str]:
    s = LocalStack(tmp)
    try:
        batch = [f"nope-{i:05d}-" + "x" * 180 for i in range(10_000)]
        rss0 = s.rss_bytes()
        asyncio.run(blast(s.url, [generate_request(n) for n in batch]))
        rss1 = s.rss_bytes()
        asyncio.run(blast(s.url, [generate_request(n.replace("nope", "gone")) for n in batch]))
        rss2 = s.rss_bytes()
        return [f"names: RSS {rss0 / 1e6:.0f} MB at start, {rss1 / 1e6:.0f} MB after batch 1, "
                f"{rss2 / 1e6:.0f} MB after batch 2: growth over batch 2 {(rss2 - rss1) / 1e6:+.1f} MB "
                f"(limit: 20 MB)"]
    finally:
        s.close()


def idle(tmp: Path) -> list[str]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    s = LocalStack(tmp, nofile=1024)
    socks = []
    try:
        for _ in range(1100):
            socks.append(socket.create_connection(("127.0.0.1", s.port), timeout=5))
        time.sleep(0.5)
        t0 = time.perf_counter()
        status, _ = s.request("GET", "/prewarm/health", timeout=10)
        took = time.perf_counter() - t0
        return [f"idle: 1,100 idle connections, open-file limit 1,024: /prewarm/health answered {status} in "
                f"{took * 1000:.1f} ms (limit: 1 s)"]
    finally:
        for sock in socks:
            sock.close()
        s.close()


def hammer(tmp: Path) -> list[str]:
    s = LocalStack(tmp, emu_args=["--time-scale", "0.02"], serve_args=["--vram-budget", "10GB"])
    try:
        rng = random.Random(7)
        reqs = [generate_request(rng.choice(HAMMER_MODELS)) for _ in range(800)]
        t0 = time.perf_counter()
        statuses = asyncio.run(blast(s.url, reqs))
        took = time.perf_counter() - t0
        with LOOPBACK.open(f"http://127.0.0.1:{s.emu_port}/emulator/stats", timeout=10) as r:
            stats = json.loads(r.read())
        ok = sum(1 for x in statuses if x == 200)
        return [f"hammer: 800 requests over 9 models from 32 clients in {took:.1f} s ({ok} answered 200); "
                f"emulator peak resident {stats['peak_vram_used']:,} bytes (budget: 10,000,000,000), "
                f"{stats['loads']} loads, {stats['unloads']} unloads"]
    finally:
        s.close()


SHAPES = {"surrogates": surrogates, "names": names, "idle": idle, "hammer": hammer}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SHAPES), help="comma-separated shapes (default: all four)")
    args = ap.parse_args(argv)
    for name in args.only.split(","):
        if name not in SHAPES:
            ap.error(f"unknown shape {name!r}: one of {', '.join(SHAPES)}")
        with tempfile.TemporaryDirectory(prefix=f"prewarm-probe-{name}-") as tmp:
            for line in SHAPES[name](Path(tmp)):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
