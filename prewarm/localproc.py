"""Running prewarm's own processes on loopback and waiting until they answer.

The demo, the benchmarks and the tests all start `prewarm emulate` / `prewarm serve`
as real processes; they share these few steps so that each waits the same way
and never sends loopback traffic through a configured HTTP proxy.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

PREWARM_CMD = [sys.executable, "-m", "prewarm"]
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


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll `url` until it answers; fail early, with the end of its stderr, if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            if isinstance(err, bytes):
                err = err.decode("utf-8", "replace")
            raise ProcessFailed(f"{' '.join(map(str, proc.args[:4]))} exited with {proc.returncode}: {err[-2000:]}")
        try:
            with LOOPBACK.open(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise ProcessFailed(f"{url} did not answer within {timeout:.0f} s")
