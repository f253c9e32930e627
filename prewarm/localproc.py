"""Running prewarm's own processes on loopback and waiting until they answer.

The demo, the benchmarks and the tests all start `prewarm emulate` / `prewarm serve`
as real processes; they share these few steps so that each waits the same way
and never sends loopback traffic through a configured HTTP proxy.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

# -P: the working directory is not put on the import path, so a folder named prewarm in it (the clone itself,
# run from the folder above it) does not shadow the installed package.
PREWARM_CMD = [sys.executable, "-P", "-m", "prewarm"]
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ProcessFailed(RuntimeError):
    """The process exited, or never answered, while we waited for it."""


def free_port() -> int:
    """A port free on 127.0.0.1 now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This environment without PREWARM_* settings and with loopback exempt from HTTP proxies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREWARM_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0, stderr_file: Path | None = None) -> None:
    """Poll `url` until it answers; fail early, with the end of its stderr (its pipe, or `stderr_file`), if
    `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            if stderr_file is not None and stderr_file.exists():
                err = stderr_file.read_text(encoding="utf-8", errors="replace")
            if isinstance(err, bytes):
                err = err.decode("utf-8", "replace")
            args = proc.args if isinstance(proc.args, (list, tuple)) else [proc.args]
            raise ProcessFailed(f"{' '.join(map(str, args[:4]))} exited with {proc.returncode}: {err[-2000:]}")
        try:
            with LOOPBACK.open(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise ProcessFailed(f"{url} did not answer within {timeout:.0f} s")


class LocalStack:
    """One `prewarm emulate` and one `prewarm serve --no-schedule` in front of it, as processes on loopback.

    What the hardening tests and `bench/hardening_probe.py` drive: real processes,
    talked to as clients would (http.client, raw sockets), never their objects.
    """

    def __init__(self, tmp: Path, env: dict[str, str] | None = None, serve_args: list[str] | None = None,
                 emu_args: list[str] | None = None, nofile: int | None = None, db: Path | None = None,
                 listen_host: str = "127.0.0.1") -> None:
        self.tmp = tmp
        self.env = clean_env() | (env or {})
        self.emu_port, self.port = free_port(), free_port()
        self.db = db or tmp / "log.duckdb"
        self.emu_args = ["--vram", "24GB", "--time-scale", "0.001", "--tokens-per-second", "5000"] + (emu_args or [])
        self.emu = self._start_emulator()
        limit = None
        if nofile is not None:
            def limit() -> None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.serve = subprocess.Popen(
            PREWARM_CMD + ["serve", "--upstream", f"http://127.0.0.1:{self.emu_port}",
                           "--listen", f"{listen_host}:{self.port}", "--db", str(self.db), "--no-schedule"]
            + (serve_args or []),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.env, preexec_fn=limit,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_http(self.url + "/api/version", self.serve)  # forwarded: answers with or without an admin token
        except BaseException:
            self.close()  # a serve that did not start must not leave its emulator behind
            raise

    def _start_emulator(self) -> subprocess.Popen[str]:
        emu = subprocess.Popen(PREWARM_CMD + ["emulate", "--listen", f"127.0.0.1:{self.emu_port}"] + self.emu_args,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.env)
        wait_http(f"http://127.0.0.1:{self.emu_port}/api/version", emu)
        return emu

    def restart_emulator(self, down_s: float) -> None:
        self.emu.terminate()
        self.emu.wait(timeout=30)
        time.sleep(down_s)
        self.emu = self._start_emulator()

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 60) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def generate(self, model: str) -> int:
        return self.request("POST", *generate_request(model))[0]

    def sql(self, query: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(PREWARM_CMD + ["sql", "--db", str(self.db), "--format", "json", query],
                              capture_output=True, text=True, timeout=120, env=self.env)

    def rows(self, query: str) -> list[dict[str, Any]]:
        done = self.sql(query)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.serve.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self, timeout: float = 60) -> tuple[int, str]:
        """SIGTERM the service; its exit status and stderr."""
        self.serve.send_signal(signal.SIGTERM)
        try:
            _, err = self.serve.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.serve.kill()
            _, err = self.serve.communicate()
            return -9, err
        return self.serve.returncode, err

    def close(self) -> None:
        for proc in (self.serve, self.emu):
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def generate_request(model: str) -> tuple[str, bytes]:
    """A short non-streaming request for `model` (/api/embed for an embedding model): (path, JSON body)."""
    if "embed" in model:
        return "/api/embed", json.dumps({"model": model, "input": "hi"}).encode()
    return "/api/generate", json.dumps({"model": model, "prompt": "hi", "stream": False,
                                        "options": {"num_predict": 2}}).encode()


async def blast(url: str, requests: list[tuple[str, bytes]], clients: int = 32) -> list[int]:
    """POST every (path, body) to `url` from `clients` concurrent keep-alive clients; the statuses, in no order."""
    import aiohttp

    statuses: list[int] = []
    queue = list(reversed(requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as http_:
        async def worker() -> None:
            while queue:
                path, body = queue.pop()
                async with http_.post(url + path, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    statuses.append(r.status)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return statuses
