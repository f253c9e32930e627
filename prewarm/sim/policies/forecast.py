"""This project's policy: the HeatForecaster and the planning state, the same decisions `prewarm serve` makes
(a test feeds both one event sequence and compares their actions).

* Training: ``HeatForecaster.fit`` on the events before ``train_end`` (by default
  the end of the warm-up), then refit every ``retrain_every_s`` of trace time on
  everything seen so far, warm-started from the previous fit.
* Every window (aligned to multiples of ``window_s``, as the forecaster aligns
  them) it predicts from the events before that instant only and hands the
  planning state (``prewarm.planner``) each model's expected request rate over
  the windows ahead (``horizon_outlook``).
* Decisions are the planning state's: a miss is loaded on demand, room made by
  evicting the lowest worth; whenever the loader would otherwise idle (a window
  starts, a load ends) the planning state's ``step`` is taken (the prefetch that
  pays); at a ``vram_cost`` above 0, models worth less are unloaded then too.

The forecasts do not depend on the budget, so one ``ForecastSchedule`` computes
them once per replay command and every budget replays against it. Before the
first fit (the warm-up) there is no forecast: the rates are each model's decayed
request count.

Never seeing the future is structural: the forecaster only ever receives the
prefix of the events frame before the instant it forecasts for.
``PerfectSchedule`` hands the same policy the truth in the same form.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from prewarm.forecast.horizon import horizon_outlook
from prewarm.forecast.model import ForecastParams, HeatForecaster
from prewarm.planner import HALF_LIFE_S, Candidate, Outlook, PlanningState
from prewarm.sim.device import SimGPU
from prewarm.sim.policies.base import ABSENT, INF, Policy
from prewarm.sim.trace import Trace


@dataclass
class WindowForecast:
    """What the plan at one window start knows: per model id, expected requests per second ahead (None: the
    forecast had nothing ahead, so every model's rate is its decayed count)."""

    at: float
    outlook: Outlook | None

    @classmethod
    def of(cls, frame: pd.DataFrame, at: float, index: dict[str, int]) -> WindowForecast:
        """The window at ``at`` from a forecasts frame, its models named by ``index`` (others dropped: the
        replay has no size for a model its trace never asks for)."""
        o = horizon_outlook(frame, at)
        if o is None:
            return cls(at, None)
        rows = [k for k, m in enumerate(o.keys) if m in index]
        return cls(at, Outlook(o.edges, tuple(index[o.keys[k]] for k in rows), o.density[rows]))


@dataclass
class ForecastSchedule:
    trace: Trace
    train_end: float
    window_s: float
    retrain_every_s: float
    horizon: int = 12
    without: tuple[str, ...] = ()  # forecaster parts left out (prewarm.forecast.model.PARTS): the ablations
    windows: list[WindowForecast] = field(default_factory=list)
    train_seconds: float = 0.0
    predict_seconds: float = 0.0
    fits: int = 0
    _done: bool = False
    _model: HeatForecaster | None = field(default=None, init=False, repr=False)
    _next_fit: float = field(default=0.0, init=False, repr=False)

    def compute(self) -> list[WindowForecast]:
        """Fit, refit and predict through the trace once; later calls return the cached windows."""
        if self._done:
            return self.windows
        tr = self.trace
        ts = tr.ts
        index = {name: k for k, name in enumerate(tr.names)}
        w = self.window_s
        first = int(np.ceil(self.train_end / w))
        last = int(np.floor(float(ts[-1]) / w))
        for k in range(first, last + 1):
            x = k * w
            n = int(np.searchsorted(ts, x, side="left"))
            frame = self.frame_at(x, n)
            if frame is None:
                continue
            started = time.perf_counter()
            self.windows.append(WindowForecast.of(frame, x, index))
            self.predict_seconds += time.perf_counter() - started
        self._done = True
        return self.windows

    def frame_at(self, x: float, n: int) -> pd.DataFrame | None:
        """The forecasts frame the plan at ``x`` reads, from the first ``n`` events (those before ``x``); None
        before the first fit. Refits when one is due."""
        if x >= self._next_fit and n > 0:
            started = time.perf_counter()
            params = ForecastParams(window_s=self.window_s, horizon=self.horizon, without=self.without)
            self._model = HeatForecaster.fit(self.trace.events.iloc[:n], x, params, previous=self._model)
            self.train_seconds += time.perf_counter() - started
            self.fits += 1
            self._next_fit = x + self.retrain_every_s
        if self._model is None:
            return None
        started = time.perf_counter()
        frame = self._model.predict(self.trace.events.iloc[:n], x, self.horizon)
        self.predict_seconds += time.perf_counter() - started
        return frame

    def __post_init__(self) -> None:
        self._next_fit = self.train_end


@dataclass
class PerfectSchedule(ForecastSchedule):
    """The true future in the forecaster's own form: per model (every model of the trace) and window over the
    same horizon, the number of requests the trace really has (``expected_requests``) and ``p_any`` 1 where
    there is at least one, 0 where there is none; from the same first window (the end of training) on.

    Nothing finer than the forecaster's frame reaches the planner (no request
    times within a window), so forecast-perfect against oracle is what the
    planner loses, and forecast against forecast-perfect what the forecaster does.
    """

    def frame_at(self, x: float, n: int) -> pd.DataFrame | None:
        tr, w, h = self.trace, self.window_s, self.horizon
        lo = n
        hi = int(np.searchsorted(tr.ts, x + h * w, side="left"))
        slot = ((tr.ts[lo:hi] - x) // w).astype(np.int64)
        counts = np.bincount(tr.mid[lo:hi].astype(np.int64) * h + slot, minlength=tr.n_models * h)
        # every model, those with no request ahead too: the truth about them is "none within the horizon",
        # which is an opinion (rate 0 over it), not the absence of one (the decayed count)
        return _frame(list(tr.names), counts.astype(float), x, w, h)


@dataclass
class RecordedSchedule(ForecastSchedule):
    """Forecasts made elsewhere (a service's ``forecasts`` table, a live harness's pushes): at each
    ``made_at`` the plan reads the rows made then, as `serve` read them when they arrived; nothing is trained.
    Rows for models the trace never asks for are dropped (the replay has no size for them)."""

    recorded: pd.DataFrame | None = None

    def compute(self) -> list[WindowForecast]:
        if self._done or self.recorded is None:
            self._done = True
            return self.windows
        index = {name: k for k, name in enumerate(self.trace.names)}
        for made, frame in self.recorded.groupby("made_at", sort=True):
            at = float(made)  # type: ignore[arg-type]  # load_forecasts: float seconds
            started = time.perf_counter()
            self.windows.append(WindowForecast.of(frame, at, index))
            self.predict_seconds += time.perf_counter() - started
        self._done = True
        return self.windows


@dataclass
class RecencySchedule(ForecastSchedule):
    """No forecast at all: the planning state reads every model's decayed request count (the ablation of the
    whole forecaster; what the planner does on recency alone)."""

    def compute(self) -> list[WindowForecast]:
        self._done = True
        return self.windows


def _frame(models: list[str], expected: np.ndarray, x: float, w: float, h: int) -> pd.DataFrame:
    """A forecasts frame (the columns HeatForecaster.predict returns) for ``models`` x ``h`` windows from ``x``."""
    starts = x + w * np.arange(h, dtype=float)
    p = (expected > 0).astype(float)
    return pd.DataFrame({
        "model": np.repeat(np.asarray(models, dtype=object), h),
        "window_start": np.tile(starts, len(models)),
        "window_end": np.tile(starts + w, len(models)),
        "expected_requests": expected,
        "p_any": p,
        "lower": expected,
        "upper": expected,
    })


class ForecastPolicy(Policy):
    name = "forecast"

    def __init__(self, schedule: ForecastSchedule, vram_cost: float = 0.0, half_life_s: float = HALF_LIFE_S) -> None:
        self.schedule = schedule
        self.vram_cost = vram_cost
        self.half_life_s = half_life_s

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        super().bind(gpu, trace)
        self.windows = self.schedule.compute()
        self.k = 0
        self.state = PlanningState(self.vram_cost, self.half_life_s)
        # one Candidate per model, made once: a decision scans them all at every window and every load's end
        self.cands = [Candidate(m, gpu.sizes[m], gpu.load_seconds[m]) for m in range(trace.n_models)]
        self.resident: set[int] = set()
        self.prefetches = 0
        self.next_event = self.windows[0].at if self.windows else INF

    def touch(self, i: int, m: int, t: float, hit: bool) -> None:
        self.state.observe(m, t)

    def on_load(self, m: int, start: float, ready: float, demand: bool) -> None:
        self.resident.add(m)
        if ready < self.next_event:
            self.next_event = ready  # the loader is free again then: time to consider a prefetch

    def on_evict(self, m: int) -> None:
        self.resident.discard(m)

    def _candidates(self, t: float, but: int = -1) -> list[Candidate]:
        gpu, cands = self.gpu, self.cands
        return [cands[v] for v in self.resident if v != but and gpu.is_resident(v, t)]

    def advance(self, x: float) -> None:
        windows = self.windows
        while self.k < len(windows) and windows[self.k].at <= x:
            self.state.set_forecast(windows[self.k].outlook)
            self.k += 1
        resident = self._candidates(x)
        gone = self.state.expendable(resident, x)
        for v in gone:
            self.evict(v, x)
        gpu = self.gpu
        if gpu.loader_idle(x):
            cands, budget = self.cands, gpu.budget
            absent = [cands[m] for m, st in enumerate(gpu.status) if st == ABSENT and cands[m].size_bytes <= budget]
            step = self.state.step(self._candidates(x) if gone else resident, absent, budget - gpu.used, x)
            if step is not None and step.load is not None:
                self.prefetches += 1
                gpu.enqueue(step.load, x)  # the loader is idle: it starts now, make_room evicts step.unload
        self.next_event = windows[self.k].at if self.k < len(windows) else INF
        if gpu.loader_free > x and gpu.loader_free < self.next_event:
            self.next_event = gpu.loader_free

    def make_room(self, m: int, t: float) -> bool:
        gpu = self.gpu
        gone = self.state.victims(self._candidates(t, but=m), gpu.used + gpu.sizes[m] - gpu.budget, t)
        if gone is None:
            return False
        for v in gone:
            self.state.evicted(v, t)
            self.evict(v, t)
        return gpu.fits(m)

    def victim(self, m: int, t: float) -> int | None:
        raise AssertionError("forecast makes room through the planning state")

    def report(self) -> dict[str, Any]:
        s = self.schedule
        return {
            "train_seconds": round(s.train_seconds, 3),
            "predict_seconds": round(s.predict_seconds, 3),
            "fits": s.fits,
            "forecast_windows": len(s.windows),
            "train_end": s.train_end,
            "prefetches": self.prefetches,
            "vram_cost": self.vram_cost,
        }


class ForecastPerfectPolicy(ForecastPolicy):
    """The same planning object fed a PerfectSchedule: only its name and its input differ (a test checks)."""

    name = "forecast-perfect"


class ForecastRecencyPolicy(ForecastPolicy):
    """Ablation: the planning state without the forecaster (a RecencySchedule)."""

    name = "forecast-recency"


class ForecastNoUsersPolicy(ForecastPolicy):
    """Ablation: the forecaster fitted and run without its per-user features."""

    name = "forecast-nousers"


class ForecastNoSeasonalPolicy(ForecastPolicy):
    """Ablation: the forecaster fitted and run without the seasonal model's path (its level instead)."""

    name = "forecast-noseasonal"
