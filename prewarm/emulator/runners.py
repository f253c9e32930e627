"""The emulated GPU: which models are resident, loads one at a time, keep_alive timers, eviction.

It follows Ollama's scheduler (server/sched.go) where a prewarming proxy can see
the difference:

* a request names a keep_alive or not; without one a resident model keeps the
  duration it has, a fresh load gets the default (5m). The timer starts when the
  model's last in-flight request ends; 0 unloads it then, negative never expires;
* a resident model whose runner options (num_ctx, num_batch, num_gpu, main_gpu,
  use_mmap, num_thread) differ from the request's is reloaded, at the size the new
  num_ctx needs;
* one load at a time; a request for a model that is loading waits for that load;
* when a model does not fit, idle models are unloaded one by one, ordered as
  Ollama's ``findRunnerToUnload`` orders them: shortest keep_alive duration first
  (forever last), then by name. If none is idle, Ollama waits for a busy one; the
  emulator waits too, for any model to go idle, up to ``busy_wait_s``, and then
  fails with 503 instead of waiting for ever;
* a model larger than the whole VRAM fails at once (real Ollama would offload
  layers to the CPU; the emulator has no CPU).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prewarm.emulator.modelinfo import DEFAULT_NUM_CTX, ModelSpec
from prewarm.units import format_size

DEFAULT_KEEP_ALIVE_S = 300.0
FOREVER = math.inf
# Go's time.Duration max (~292 years): what Ollama reports as expires_at for "forever".
FOREVER_DISPLAY_S = (2**63 - 1) / 1e9

RUNNER_DEFAULTS: dict[str, Any] = {
    "num_ctx": DEFAULT_NUM_CTX,
    "num_batch": 512,
    "num_gpu": -1,
    "main_gpu": 0,
    "use_mmap": None,
    "num_thread": 0,
}


class EmulatorError(Exception):
    """An error with the HTTP status Ollama would answer with."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(EmulatorError):
    status = 400


class ModelNotFound(EmulatorError):
    status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f'model "{name}" not found, try pulling it first')


class ModelTooLarge(EmulatorError):
    status = 500


class ServerBusy(EmulatorError):
    status = 503


def runner_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The options that decide whether a loaded runner can serve a request (Ollama's api.Runner)."""
    opts = dict(RUNNER_DEFAULTS)
    for key in RUNNER_DEFAULTS:
        if options and options.get(key) is not None:
            value = options[key]
            if key == "use_mmap":
                if not isinstance(value, bool):
                    raise BadRequest(f"option {key} must be true or false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
                raise BadRequest(f"option {key} must be an integer, got {value!r}")
            else:
                value = int(value)
            opts[key] = value
    opts["num_ctx"] = max(4, opts["num_ctx"])  # Ollama's floor
    return opts


def _same_runner(loaded: dict[str, Any], wanted: dict[str, Any]) -> bool:
    if wanted["num_gpu"] < 0:  # Ollama: num_gpu=-1 never forces a reload
        loaded = {**loaded, "num_gpu": -1}
    return loaded == wanted


@dataclass(eq=False)
class Runner:
    spec: ModelSpec
    size: int
    options: dict[str, Any]
    session_s: float
    loading: bool = True
    refs: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None
    expires_at: float | None = None  # wall clock, set while the timer runs
    loaded_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.spec.name

    def expiry(self, now: float) -> float:
        """Wall-clock expiry as /api/ps shows it (busy or loading: now + duration, as Ollama does)."""
        if self.expires_at is not None:
            return self.expires_at
        return now + (FOREVER_DISPLAY_S if self.session_s == FOREVER else self.session_s)


@dataclass
class Stats:
    loads: int = 0
    unloads: int = 0
    evictions: int = 0
    reloads: int = 0
    busy_errors: int = 0
    peak_vram_used: int = 0


class Scheduler:
    """Owns VRAM. All state changes happen on the event loop without awaiting in between."""

    def __init__(
        self,
        vram_bytes: int,
        time_scale: float = 1.0,
        busy_wait_s: float = 30.0,
        default_keep_alive_s: float = DEFAULT_KEEP_ALIVE_S,
    ) -> None:
        if vram_bytes <= 0:
            raise ValueError(f"vram must be positive, got {vram_bytes}")
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        self.vram_bytes = vram_bytes
        self.time_scale = time_scale
        self.busy_wait_s = busy_wait_s
        self.default_keep_alive_s = default_keep_alive_s
        self.loaded: dict[str, Runner] = {}
        self.stats = Stats()
        # (event, model, time.monotonic()) for every load_start, load_end, unload, evict: tests read the order.
        self.events: deque[tuple[str, str, float]] = deque(maxlen=10_000)
        self._load_lock = asyncio.Lock()
        self._changed = asyncio.Event()

    @property
    def vram_used(self) -> int:
        return sum(r.size for r in self.loaded.values())

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, deadline: float, why: str) -> None:
        ev = self._changed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.stats.busy_errors += 1
            raise ServerBusy(f"server busy, please try again: {why}")
        try:
            await asyncio.wait_for(ev.wait(), remaining)
        except TimeoutError:
            self.stats.busy_errors += 1
            raise ServerBusy(f"server busy, please try again: {why}") from None

    async def acquire(self, spec: ModelSpec, options: dict[str, Any], keep_alive_s: float | None) -> Runner:
        """A loaded runner for ``spec`` with one reference held; call :meth:`release` when done."""
        need = spec.size_at(options["num_ctx"])
        if need > self.vram_bytes:
            raise ModelTooLarge(
                f'model "{spec.name}" needs {format_size(need)} of VRAM at num_ctx {options["num_ctx"]}, '
                f"more than the emulated GPU's {format_size(self.vram_bytes)} in total "
                "(the emulator cannot offload to CPU)"
            )
        deadline = time.monotonic() + self.busy_wait_s
        while True:
            r = self.loaded.get(spec.name)
            if r is not None and _same_runner(r.options, options):
                if r.loading:
                    await r.ready.wait()
                    continue
                self._use(r, keep_alive_s)
                return r
            async with self._load_lock:
                r = self.loaded.get(spec.name)
                if r is not None:
                    if _same_runner(r.options, options):
                        continue
                    if r.refs == 0:
                        self._unload(r, "reload")
                        self.stats.reloads += 1
                    else:
                        r.session_s = 0.0  # unload once its requests finish, as Ollama does
                        await self._wait_change(deadline, f'"{spec.name}" is busy with other runner options')
                        continue
                if not await self._make_room(spec.name, need, deadline):
                    continue
                return await self._load(spec, options, need, keep_alive_s)

    async def _make_room(self, name: str, need: int, deadline: float) -> bool:
        """Evict idle models until ``need`` fits. False when it had to wait (state may have changed)."""
        while self.vram_used + need > self.vram_bytes:
            others = sorted(
                (r for r in self.loaded.values() if r.name != name),
                key=lambda r: (r.session_s, r.name),
            )
            idle = [r for r in others if r.refs == 0 and not r.loading]
            if idle:
                self._unload(idle[0], "evict")
                self.stats.evictions += 1
                continue
            busy = ", ".join(r.name for r in others) or "nothing"
            await self._wait_change(
                deadline,
                f'"{name}" needs {format_size(need)} but only {format_size(self.vram_bytes - self.vram_used)} '
                f"is free and every resident model is busy ({busy})",
            )
            return False
        return True

    async def _load(self, spec: ModelSpec, options: dict[str, Any], need: int, keep_alive_s: float | None) -> Runner:
        session = self.default_keep_alive_s if keep_alive_s is None else keep_alive_s
        r = Runner(spec=spec, size=need, options=options, session_s=session, refs=1)
        self.loaded[spec.name] = r
        self.stats.peak_vram_used = max(self.stats.peak_vram_used, self.vram_used)
        self.events.append(("load_start", spec.name, time.monotonic()))
        try:
            await asyncio.sleep(spec.load_seconds * self.time_scale)
        except BaseException:
            del self.loaded[spec.name]
            r.ready.set()
            self._notify()
            raise
        r.loading = False
        r.loaded_at = time.time()
        self.stats.loads += 1
        self.events.append(("load_end", spec.name, time.monotonic()))
        r.ready.set()
        self._notify()
        return r

    def _use(self, r: Runner, keep_alive_s: float | None) -> None:
        r.refs += 1
        if r.timer is not None:
            r.timer.cancel()
            r.timer = None
            r.expires_at = None
        if keep_alive_s is not None:
            r.session_s = keep_alive_s

    def release(self, r: Runner) -> None:
        """One request on ``r`` ended: start its keep_alive timer when it was the last."""
        r.refs -= 1
        if r.refs > 0 or self.loaded.get(r.name) is not r:
            return
        if r.session_s <= 0:
            self._unload(r, "expire")
        elif r.session_s != FOREVER:
            r.timer = asyncio.get_running_loop().call_later(r.session_s, self._expire, r)
            r.expires_at = time.time() + r.session_s
        self._notify()

    def _expire(self, r: Runner) -> None:
        r.timer = None
        if r.refs == 0 and self.loaded.get(r.name) is r:
            self._unload(r, "expire")

    def expire_now(self, name: str) -> None:
        """keep_alive 0 with no prompt: unload now, or as soon as in-flight requests end."""
        r = self.loaded.get(name)
        if r is None:
            return
        r.session_s = 0.0
        if r.refs == 0 and not r.loading:
            self._unload(r, "expire")

    def _unload(self, r: Runner, why: str) -> None:
        if r.timer is not None:
            r.timer.cancel()
            r.timer = None
        del self.loaded[r.name]
        self.stats.unloads += 1
        self.events.append(("evict" if why == "evict" else "unload", r.name, time.monotonic()))
        self._notify()

    def close(self) -> None:
        for r in list(self.loaded.values()):
            if r.timer is not None:
                r.timer.cancel()
                r.timer = None
