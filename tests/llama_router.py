"""llama.cpp's `llama-server` in router mode for tests: the binary bench/llama_server.py builds, started on loopback.

`.ci/run` builds the binary before the tests (cached in ~/.cache); without it the
tests that need it skip, except in CI, where a missing binary fails them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prewarm.backends.llamacpp import RESIDENT
from prewarm.localproc import clean_env, free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("llama_server", ROOT / "bench" / "llama_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


llama_server = _bench_module()


def _binary() -> Path:
    path = Path(llama_server.binary())
    if not path.exists():
        message = f"llama-server is not built: run `python bench/llama_server.py build` (it caches {path})"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI builds it first: a missing binary there is a broken CI, not a skip
        pytest.skip(message)
    return path


@dataclass(frozen=True)
class Router:
    url: str
    models: tuple[str, ...]  # smallest first
    models_dir: Path
    proc: subprocess.Popen[bytes]

    def get(self, path: str) -> Any:
        with LOOPBACK.open(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())

    def statuses(self) -> dict[str, str]:
        return {m["id"]: m["status"]["value"] for m in self.get("/models")["data"]}

    def loaded(self) -> set[str]:
        return {m for m, s in self.statuses().items() if s in RESIDENT}

    def post(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with LOOPBACK.open(req, timeout=60) as resp:
            return json.loads(resp.read())

    def unload_all(self) -> None:
        for m in self.loaded():
            self.post("/models/unload", {"model": m})
        deadline = time.monotonic() + 30
        while self.loaded() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.loaded()


@contextmanager
def start_router(models_dir: Path, log: Path, models_max: int = 0, extra: tuple[str, ...] = ()) -> Iterator[Router]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(llama_server.router_command(_binary(), models_dir, port, models_max, extra),
                                stdout=out, stderr=subprocess.STDOUT, env=clean_env())
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/models", proc)
            models = tuple(sorted((p.stem for p in models_dir.glob("*.gguf")),
                                  key=lambda m: (models_dir / f"{m}.gguf").stat().st_size))
            yield Router(url, models, models_dir, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
