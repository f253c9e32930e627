"""This project's policy: the HeatForecaster and the planner, exactly as `prewarm serve` uses them.

* Training: ``HeatForecaster.fit`` on the events before ``train_end`` (by default
  the end of the warm-up), then refit every ``retrain_every_s`` of trace time on
  everything seen so far, warm-started from the previous fit.
* Every window (aligned to multiples of ``window_s``, as the forecaster aligns
  them) it predicts from the events before that instant only, turns the forecast
  into (P(any request over the plan horizon), seconds to the likely first request)
  with the same ``horizon_views`` as the prewarmer, and runs ``planner.plan`` with the
  resident set, sizes and load times, filling ``planner.VramAccount``'s allowance
  (what an on-demand LRU cache of the same requests would hold); the unloads and loads are carried out on the
  simulated GPU at that instant (loads through the single loader queue).
* A miss is loaded on demand, after ``planner.make_room`` chose what to evict
  under the latest forecast, within the allowance too.

The forecasts do not depend on the budget, so one ``ForecastSchedule`` computes
them once per replay command and every budget replays against it. Before the
first fit (the warm-up) there is no forecast: every model has p_any 0, so the
policy only loads on demand.

Never seeing the future is structural: the forecaster only ever receives the
prefix of the events frame before the instant it forecasts for.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from prewarm.forecast.horizon import PLAN_WINDOWS, horizon_views
from prewarm.forecast.model import ForecastParams, HeatForecaster
from prewarm.planner import ModelView, PlanConfig, RecentDemand, VramAccount, make_room, plan
from prewarm.sim.gpu import SimGPU
from prewarm.sim.policies.base import ABSENT, INF, QUEUED, Policy
from prewarm.sim.trace import Trace


@dataclass
class WindowForecast:
    """What the plan at one window start knows: per model id, (p_any over the horizon, seconds to first demand)."""

    at: float
    views: dict[int, tuple[float, float | None]]


@dataclass
class ForecastSchedule:
    trace: Trace
    train_end: float
    window_s: float
    retrain_every_s: float
    horizon: int = 12
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
            views = horizon_views(frame, x)
            self.predict_seconds += time.perf_counter() - started
            self.windows.append(WindowForecast(x, {index[m]: v for m, v in views.items() if m in index}))
        self._done = True
        return self.windows

    def frame_at(self, x: float, n: int) -> pd.DataFrame | None:
        """The forecasts frame the plan at ``x`` reads, from the first ``n`` events (those before ``x``); None
        before the first fit. Refits when one is due."""
        if x >= self._next_fit and n > 0:
            started = time.perf_counter()
            params = ForecastParams(window_s=self.window_s, horizon=self.horizon)
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
    """The true future in the forecaster's own form: per model and window over the same horizon, the number of
    requests the trace really has (``expected_requests``) and ``p_any`` 1 where there is at least one, 0 where
    there is none; from the same first window (the end of training) on.

    Nothing finer than the forecaster's frame reaches the planner (no request
    times within a window), so forecast-perfect against oracle is what the
    planner loses, and forecast against forecast-perfect what the forecaster does.
    """

    def frame_at(self, x: float, n: int) -> pd.DataFrame | None:
        tr, w, h = self.trace, self.window_s, self.horizon
        lo = n
        hi = int(np.searchsorted(tr.ts, x + h * w, side="left"))
        if hi <= lo:
            return _frame([], np.zeros(0), x, w, h)
        slot = ((tr.ts[lo:hi] - x) // w).astype(np.int64)
        counts = np.bincount(tr.mid[lo:hi].astype(np.int64) * h + slot, minlength=tr.n_models * h)
        counts = counts.reshape(tr.n_models, h)
        asked = np.flatnonzero(counts.sum(axis=1) > 0)
        return _frame([tr.names[m] for m in asked], counts[asked].astype(float).ravel(), x, w, h)


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


# Planned loads wait while more than this many on-demand loads are queued: a prefetch
# queued behind a backlog only delays requests that are already waiting.
DEMAND_BACKLOG = 1


class ForecastPolicy(Policy):
    name = "forecast"

    def __init__(self, schedule: ForecastSchedule) -> None:
        self.schedule = schedule

    def bind(self, gpu: SimGPU, trace: Trace) -> None:
        super().bind(gpu, trace)
        self.windows = self.schedule.compute()
        self.k = 0
        self.current: dict[int, tuple[float, float | None]] = {}
        self.plans = 0
        self.want: set[int] = set()
        self.index = {name: k for k, name in enumerate(trace.names)}
        self.next_event = self.windows[0].at if self.windows else INF
        # recency: each model's idle-time history, read over the on-demand cache's horizon (at least the plan's)
        self.plan_horizon_s = PLAN_WINDOWS * self.schedule.window_s
        self.recent = RecentDemand()
        # the VRAM-hours an on-demand LRU cache would hold: the plan's and make_room's allowance
        self.account = VramAccount(self.schedule.horizon * self.schedule.window_s)

    def touch(self, i: int, m: int, t: float, hit: bool) -> None:
        self.recent.observe(m, t)
        gpu = self.gpu
        self.account.request(m, gpu.sizes[m], t, gpu.used, gpu.budget)

    def allowance(self, t: float) -> int:
        gpu = self.gpu
        return self.account.allowance(t, gpu.used, gpu.budget)

    def _view(self, m: int, resident: bool, x: float) -> ModelView:
        p, demand = self.current.get(m, (0.0, None))
        gpu = self.gpu
        p_any = self.recent.blend(m, p, x, self.account.keep_horizon_s(x, self.plan_horizon_s))
        return ModelView(self.trace.names[m], gpu.sizes[m], gpu.load_seconds[m], p_any, demand,
                         resident=resident, idle_s=self.recent.idle_s(m, x))

    def advance(self, x: float) -> None:
        windows = self.windows
        wf = windows[self.k]
        self.k += 1
        self.current = wf.views
        self._plan(wf.at)
        self.next_event = windows[self.k].at if self.k < len(windows) else INF

    def _plan(self, x: float) -> None:
        """Run the planner on everything present (queued and loading count as resident: they are on their way).

        Unloads happen now. Planned loads join the loader queue only while at most
        DEMAND_BACKLOG on-demand loads wait there, and only as many as the loader
        can do before the next plan (their load seconds within one window).
        """
        gpu = self.gpu
        status = gpu.status
        recent = x - 8 * self.plan_horizon_s
        ids = set(self.current) | {m for m, st in enumerate(status) if st != ABSENT}
        ids |= {m for m, last in self.recent.last.items() if last >= recent}
        views = [self._view(m, status[m] != ABSENT, x) for m in sorted(ids)]
        index = self.index
        self.plans += 1
        want: set[int] = set()
        queue = gpu.queue
        demand_backlog = sum(1 for q in queue if gpu.waiters[q])
        prefetch_s = sum(gpu.load_seconds[q] for q in queue if not gpu.waiters[q])
        for action in plan(views, self.allowance(x)):
            m = index[action.model]
            if action.action == "unload":
                if action.displaced:
                    continue  # room for a planned load is made when that load starts (make_room), not before
                if gpu.is_resident(m, x):
                    self.evict(m, x)
                elif status[m] == QUEUED:
                    gpu.cancel(m)  # a prefetch it queued earlier; a requested load stays
            else:
                if action.action == "load" and status[m] == ABSENT:
                    cost = gpu.load_seconds[m]
                    if demand_backlog > DEMAND_BACKLOG or prefetch_s + cost > self.schedule.window_s:
                        continue
                    prefetch_s += cost
                    gpu.enqueue(m, x)
                want.add(m)
        self.want = want

    def wanted(self, m: int, s: float) -> bool:
        """A prefetch still in the plan, and room for it within the allowance without evicting a model at least as
        likely to be asked for.

        make_room alone would evict the least likely resident models whatever
        their p_any; for a speculative load that could unload a model more
        likely to be needed than the one coming in.
        """
        if m not in self.want:
            return False
        gpu = self.gpu
        allowance = self.allowance(s)
        if gpu.used + gpu.sizes[m] <= allowance:
            return True
        incoming = self._view(m, False, s)
        margin = 1.0 + PlanConfig().hysteresis
        views = [dataclasses.replace(v, pinned=v.p_any * margin >= incoming.p_any)
                 for v in (self._view(r, True, s) for r in range(len(gpu.status)) if gpu.is_resident(r, s))]
        return make_room(views + [incoming], incoming.model, allowance) is not None

    def make_room(self, m: int, t: float) -> bool:
        """Room within ``VramAccount.room_limit``; when no evictions make room there (the model is larger),
        the budget."""
        gpu = self.gpu
        limit = self.account.room_limit(t, gpu.used, gpu.budget, request=bool(gpu.waiters[m]))
        if gpu.used + gpu.sizes[m] <= limit:
            return True
        views = [self._view(v, True, t) for v in range(len(gpu.status)) if gpu.is_resident(v, t)]
        views.append(self._view(m, False, t))
        actions = make_room(views, self.trace.names[m], limit)
        if actions is None:
            actions = make_room(views, self.trace.names[m], gpu.budget)
        if actions is None:
            return False
        for a in actions:
            self.evict(self.index[a.model], t)
        return gpu.fits(m)

    def victim(self, m: int, t: float) -> int | None:
        raise AssertionError("forecast makes room through planner.make_room")

    def report(self) -> dict[str, Any]:
        s = self.schedule
        return {
            "train_seconds": round(s.train_seconds, 3),
            "predict_seconds": round(s.predict_seconds, 3),
            "fits": s.fits,
            "forecast_windows": len(s.windows),
            "train_end": s.train_end,
        }


class ForecastPerfectPolicy(ForecastPolicy):
    """The same planning object fed a PerfectSchedule: only its name and its input differ (a test checks)."""

    name = "forecast-perfect"
