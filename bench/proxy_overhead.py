"""What the proxy costs: direct-to-emulator vs through `prewarm serve`, measured in one run.

Three processes, as in production: the emulator (`prewarm emulate`, loads instant,
tokens paced at --tokens-per-second), the proxy (`prewarm serve --no-schedule`,
request logging on, a real DuckDB file in a temp dir) and this load generator, so
the generator never shares the proxy's event loop. Each client streams
/api/generate (NDJSON, --tokens tokens per reply) back to back; latency is from
sending the request to the end of the stream. Direct and proxied rounds are
interleaved so machine noise hits both alike.

    .venv/bin/python bench/proxy_overhead.py [--duration 4] [--rounds 2] [--tokens 16] [--floor]

--floor adds two lower bounds to the same interleaving (bench/proxy_floor.py): a
bare aiohttp pass-through and a byte pipe with no HTTP parsing at all, so the
figures say how much of the overhead is prewarm's and how much any Python proxy
pays on the machine.

Targets (issue 2, on the 2-core dev box): added p50 latency at 1 client <= 1 ms;
throughput at 32 concurrent streams >= 0.8x direct.
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
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from prewarm.localproc import free_port, wait_http

MODEL = "qwen2.5:0.5b"


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    errors: int = 0
    proxy_cpu_s: float = 0.0
    upstream_cpu_s: float = 0.0

    def merge(self, other: Sample) -> None:
        self.latencies.extend(other.latencies)
        self.elapsed += other.elapsed
        self.errors += other.errors
        self.proxy_cpu_s += other.proxy_cpu_s
        self.upstream_cpu_s += other.upstream_cpu_s

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000.0 if xs else float("nan")


async def one_round(session: aiohttp.ClientSession, url: str, clients: int, duration: float, body: bytes) -> Sample:
    sample = Sample()
    stop_at = time.perf_counter() + duration

    async def client() -> None:
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    async for _ in r.content.iter_any():
                        pass
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                sample.latencies.append(time.perf_counter() - t)
            else:
                sample.errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    sample.elapsed = time.perf_counter() - t0
    return sample


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc): the proxy's cost, unaffected by other load on the box."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Mode:
    name: str
    url: str
    pid: int  # the process between client and emulator; for direct, the idle proxy (it must stay idle)


async def measure(modes: list[Mode], args: argparse.Namespace, emulator_pid: int) -> dict[int, dict[str, Sample]]:
    body = json.dumps({"model": MODEL, "prompt": "benchmark", "stream": True,
                       "options": {"num_predict": args.tokens}}).encode()
    results: dict[int, dict[str, Sample]] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for mode in modes:  # load the model and open connections before timing
            await one_round(session, mode.url + "/api/generate", 4, 0.5, body)
        for clients in args.clients:
            results[clients] = {mode.name: Sample() for mode in modes}
            for _ in range(args.rounds):
                for mode in modes:
                    cpu0, ecpu0 = cpu_seconds(mode.pid), cpu_seconds(emulator_pid)
                    s = await one_round(session, mode.url + "/api/generate", clients, args.duration, body)
                    s.proxy_cpu_s = cpu_seconds(mode.pid) - cpu0
                    s.upstream_cpu_s = cpu_seconds(emulator_pid) - ecpu0
                    results[clients][mode.name].merge(s)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    p.add_argument("--duration", type=float, default=4.0, help="seconds per round per mode")
    p.add_argument("--rounds", type=int, default=2, help="interleaved direct/proxy rounds per concurrency")
    p.add_argument("--tokens", type=int, default=16, help="tokens per streamed reply")
    p.add_argument("--tokens-per-second", type=float, default=1000.0, help="emulated generation speed per stream")
    p.add_argument("--floor", action="store_true",
                   help="also measure a bare aiohttp pass-through and a byte pipe (bench/proxy_floor.py)")
    args = p.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREWARM_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    emu_port, proxy_port = free_port(), free_port()
    tmp = tempfile.TemporaryDirectory(prefix="prewarm-bench-")
    db = Path(tmp.name) / "bench.duckdb"
    prewarm = [sys.executable, "-m", "prewarm"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            prewarm + ["emulate", "--listen", f"127.0.0.1:{emu_port}", "--vram", "24GB", "--time-scale", "0",
                       "--tokens-per-second", str(args.tokens_per_second)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        direct = f"http://127.0.0.1:{emu_port}"
        wait_http(direct + "/api/version", procs[0])
        procs.append(subprocess.Popen(
            prewarm + ["serve", "--upstream", direct, "--listen", f"127.0.0.1:{proxy_port}", "--db", str(db),
                       "--no-schedule"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        proxied = f"http://127.0.0.1:{proxy_port}"
        wait_http(proxied + "/prewarm/health", procs[1])
        modes = [Mode("direct", direct, procs[1].pid), Mode("proxy", proxied, procs[1].pid)]
        if args.floor:
            floor_script = str(Path(__file__).with_name("proxy_floor.py"))
            for kind in ("aiohttp", "pipe"):
                port = free_port()
                procs.append(subprocess.Popen(
                    [sys.executable, floor_script, kind, "--upstream", direct, "--listen", str(port)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
                modes.append(Mode(kind, f"http://127.0.0.1:{port}", procs[-1].pid))
                wait_http(modes[-1].url + "/api/version", procs[-1])

        results = asyncio.run(measure(modes, args, procs[0].pid))

        procs[1].send_signal(signal.SIGTERM)
        procs[1].wait(timeout=60)
        import duckdb

        con = duckdb.connect(str(db), read_only=True)
        logged = con.execute("SELECT count(*) FROM requests").fetchone()[0]
        con.close()
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        tmp.cleanup()

    print(f"prewarm proxy overhead - {os.cpu_count()} CPUs, emulator at {args.tokens_per_second:g} tokens/s, "
          f"{args.tokens} tokens per streamed /api/generate, {args.rounds}x{args.duration:g} s per mode, logging on")
    print(f"{'clients':>7} {'mode':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for clients, modes in results.items():
        for name, s in modes.items():
            print(f"{clients:>7} {name:>6} {s.rps:>9.1f} {s.pct(0.5):>8.2f} {s.pct(0.99):>8.2f} {s.errors:>6}")
    print()
    for clients, by_mode in results.items():
        d = by_mode["direct"]
        print(f"{clients:>3} clients: emulator CPU {1e6 * d.upstream_cpu_s / max(1, len(d.latencies)):.0f} us/request "
              f"direct; proxy idle during direct rounds: {100 * d.proxy_cpu_s / d.elapsed:.1f}% of a core")
        for name, x in by_mode.items():
            if name == "direct":
                continue
            print(f"    {name:>7}/direct: throughput {x.rps / d.rps:.3f}, "
                  f"added p50 {x.pct(0.5) - d.pct(0.5):+.2f} ms, added p99 {x.pct(0.99) - d.pct(0.99):+.2f} ms, "
                  f"its CPU {1e6 * x.proxy_cpu_s / max(1, len(x.latencies)):.0f} us/request")
    total = sum(len(m["proxy"].latencies) + m["proxy"].errors for m in results.values())
    print(f"rows logged by the proxy: {logged} (>= {total} timed requests + warm-up)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
