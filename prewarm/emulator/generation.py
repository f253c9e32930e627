"""One emulated generation or embedding: request fields in, paced tokens and Ollama's metrics out.

Shared by the native /api handlers and the OpenAI-compatible /v1 handlers, so
both hold the model (in-flight count, keep_alive timer) exactly the same way.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prewarm.catalog import Catalog
from prewarm.emulator import text
from prewarm.emulator.modelinfo import ModelSpec, normalize_name, specs_from_catalog
from prewarm.emulator.runners import FOREVER, BadRequest, ModelNotFound, Runner, Scheduler, runner_options
from prewarm.units import parse_duration

# Prompt evaluation runs this many times faster than generation, roughly as on a GPU.
PROMPT_SPEEDUP = 10.0


def parse_keep_alive(value: Any) -> float | None:
    """Ollama's reading: absent -> None (keep the model's duration), negative -> forever, else seconds."""
    if value is None:
        return None
    if not isinstance(value, (str, int, float)):
        raise BadRequest(f"invalid keep_alive {value!r}: use a duration like 5m or a number of seconds")
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise BadRequest(f"invalid keep_alive {value!r}: {exc}") from None
    return FOREVER if seconds < 0 else seconds


async def paced(tokens: list[str], rate: float) -> AsyncIterator[str]:
    """Yield tokens at ``rate`` per second, on a schedule so slow writes do not add up to drift."""
    t0 = time.monotonic()
    for i, tok in enumerate(tokens):
        delay = t0 + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield tok


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


@dataclass
class Generation:
    """A reply being produced on a held runner; ``metrics()`` gives the final chunk's numbers."""

    engine: Engine
    runner: Runner
    started: float
    load_s: float
    prompt_tokens: int
    reply: list[str]
    done_reason: str
    prompt_eval_s: float = 0.0
    eval_s: float = 0.0
    produced: list[str] = field(default_factory=list)

    async def tokens(self) -> AsyncIterator[str]:
        rate = self.engine.tokens_per_second
        t0 = time.monotonic()
        await asyncio.sleep(self.prompt_tokens / (rate * PROMPT_SPEEDUP))
        self.prompt_eval_s = time.monotonic() - t0
        t1 = time.monotonic()
        async for tok in paced(self.reply, rate):
            self.produced.append(tok)
            yield tok
        self.eval_s = time.monotonic() - t1

    @property
    def text(self) -> str:
        return "".join(self.produced)

    def metrics(self) -> dict[str, int]:
        return {
            "total_duration": _ns(time.monotonic() - self.started),
            "load_duration": _ns(self.load_s),
            "prompt_eval_count": self.prompt_tokens,
            "prompt_eval_duration": _ns(self.prompt_eval_s),
            "eval_count": len(self.produced),
            "eval_duration": _ns(self.eval_s),
        }


class Engine:
    """Catalog + emulated GPU + token rate: everything a handler needs."""

    def __init__(
        self,
        catalog: Catalog,
        vram_bytes: int,
        time_scale: float = 1.0,
        tokens_per_second: float = 200.0,
        busy_wait_s: float = 30.0,
    ) -> None:
        if not tokens_per_second > 0 or not math.isfinite(tokens_per_second):
            raise ValueError(f"tokens_per_second must be a positive number, got {tokens_per_second}")
        self.specs: dict[str, ModelSpec] = specs_from_catalog(catalog)
        self.scheduler = Scheduler(vram_bytes, time_scale=time_scale, busy_wait_s=busy_wait_s)
        self.tokens_per_second = tokens_per_second
        self.started_at = time.time()

    def spec(self, name: Any) -> ModelSpec:
        if not isinstance(name, str) or not name.strip():
            raise BadRequest("model is required")
        spec = self.specs.get(normalize_name(name))
        if spec is None:
            raise ModelNotFound(name)
        return spec

    @asynccontextmanager
    async def hold(self, spec: ModelSpec, options: dict | None, keep_alive: Any) -> AsyncIterator[tuple[Runner, float]]:
        """Hold a loaded runner for the body of the block; yields it and the seconds spent getting it."""
        if options is not None and not isinstance(options, dict):
            raise BadRequest("options must be an object")
        ka = parse_keep_alive(keep_alive)
        opts = runner_options(options)
        t0 = time.monotonic()
        runner = await self.scheduler.acquire(spec, opts, ka)
        try:
            yield runner, time.monotonic() - t0
        finally:
            self.scheduler.release(runner)

    @asynccontextmanager
    async def generate(
        self, spec: ModelSpec, prompt: str, options: dict | None, keep_alive: Any
    ) -> AsyncIterator[Generation]:
        started = time.monotonic()
        num_predict = _int_option(options, "num_predict")
        seed = _int_option(options, "seed")
        async with self.hold(spec, options, keep_alive) as (runner, load_s):
            reply = text.reply_tokens(spec.name, prompt, seed, num_predict)
            yield Generation(
                engine=self,
                runner=runner,
                started=started,
                load_s=load_s,
                prompt_tokens=text.count_tokens(prompt),
                reply=reply,
                done_reason="length" if num_predict is not None and num_predict > 0 else "stop",
            )

    def load_only(self, spec: ModelSpec, options: dict | None, keep_alive: Any):
        """A request with no prompt: load (or keep) the model and return at once."""
        return self.hold(spec, options, keep_alive)

    def unload(self, spec: ModelSpec) -> None:
        self.scheduler.expire_now(spec.name)

    def close(self) -> None:
        self.scheduler.close()


def _int_option(options: dict | None, key: str) -> int | None:
    if not options or options.get(key) is None:
        return None
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise BadRequest(f"option {key} must be an integer, got {value!r}")
    return int(value)
