"""`prewarm serve` and the replay make the same decisions: one event sequence fed to the live prewarmer (fake
backend, fake clock, fixed load times) and to the replay's forecast policy gives the same ordered list of
(time, action, model)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sim_helpers import drive, make_trace

from prewarm.catalog import load_catalog
from prewarm.config import Settings
from prewarm.prewarmer import Prewarmer
from prewarm.records import RequestEvent
from prewarm.sim.policies import ForecastPolicy, ForecastSchedule, WindowForecast

GB = 10**9
SIZES = {"a": 4 * GB, "b": 3 * GB, "c": 5 * GB, "d": 2 * GB}
LOADS = {"a": 10.0, "b": 8.0, "c": 20.0, "d": 5.0}
BUDGET = 8 * GB
T0 = 1_000_000.0
WINDOW = 600.0
# Forecast windows (expected requests per second over the next window) and requests, spaced so that every
# event finds the loader idle: where they overlap, a live service and a replay see different instants.
WINDOWS = [(T0, {"a": 0.01, "b": 0.002, "d": 0.005}),
           (T0 + 600, {"c": 0.02, "b": 0.01, "a": 0.001}),
           (T0 + 1200, {"a": 0.004, "d": 0.02})]
REQUESTS = [(T0 + 100, "c"), (T0 + 300, "b"), (T0 + 900, "d"), (T0 + 1000, "c"), (T0 + 1400, "b"),
            (T0 + 1500, "a"), (T0 + 1700, "a"), (T0 + 1760, "b")]


def frame(at: float, rates: dict[str, float]) -> pd.DataFrame:
    """The forecaster's frame for one window from ``at``: what `serve` hands apply_plan."""
    return pd.DataFrame({"model": list(rates), "window_start": at, "window_end": at + WINDOW,
                         "expected_requests": [r * WINDOW for r in rates.values()], "p_any": 1.0})


def replay_actions(vram_cost: float) -> list[tuple[float, str, str]]:
    trace = make_trace(REQUESTS)
    ids = {n: k for k, n in enumerate(trace.names)}
    windows = [WindowForecast.of(frame(at, rates), at, ids) for at, rates in WINDOWS]
    schedule = ForecastSchedule(trace, T0, WINDOW, 1e12, windows=windows, _done=True)
    _, gpu = drive(ForecastPolicy(schedule, vram_cost), trace, SIZES, LOADS, BUDGET)
    end = float(trace.ts[-1])
    out = []
    for iv in gpu.timeline:
        out.append((iv.start, "load", trace.names[iv.model]))
        if iv.end < end:  # the stays still open at the end are closed by the replay, not evicted
            out.append((iv.end, "unload", trace.names[iv.model]))
    return out


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FixedLoadBackend:
    """An upstream that loads in a fixed time on the fake clock and holds what it is told to (a sleeping-vLLM
    kind: a request for an absent model is loaded by the prewarmer before it is forwarded)."""

    kind = "fake"
    base_url = "http://127.0.0.1:9"
    resident_known = True
    loads_on_request = False
    sets_keep_alive = False
    routes_per_model = False

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.held: dict[str, int] = {}
        self.load_options: dict[str, dict[str, Any]] = {}
        self.size_source: dict[str, str] = {}

    def canonical(self, model: str) -> str:
        return model

    async def list_resident(self) -> dict[str, int]:
        return dict(self.held)

    async def load(self, model: str, keep_alive: str | None = None, options: dict[str, Any] | None = None) -> None:
        self.clock.t += LOADS[model]
        self.held[model] = SIZES[model]

    async def unload(self, model: str) -> None:
        self.held.pop(model, None)

    async def sizes(self) -> dict[str, int]:
        return dict(SIZES)

    async def reported_vram_total(self) -> int | None:
        return None

    def route_for(self, model: str) -> str:
        return self.base_url

    async def check(self) -> list[str]:
        return []

    async def keep(self, model: str, keep_alive: str) -> None:
        return None

    async def close(self) -> None:
        return None


async def live_actions(tmp_path: Path, vram_cost: float) -> list[tuple[float, str, str]]:
    catalog_csv = tmp_path / "catalog.csv"
    catalog_csv.write_text("model,size_bytes,load_seconds\n" + "".join(
        f"{m},{SIZES[m]},{LOADS[m]}\n" for m in SIZES))
    catalog = load_catalog(catalog_csv)
    settings = Settings(upstream=FixedLoadBackend.base_url, db=str(tmp_path / "p.duckdb"), vram_budget=BUDGET,
                        vram_reserve=0, vram_cost=vram_cost)
    clock = Clock(T0 - 1.0)
    backend = FixedLoadBackend(clock)
    pw = Prewarmer(settings, backend, None, catalog=catalog, clock=clock)
    await pw.start(start_tracker=False)
    events = sorted([(at, 0, rates, "") for at, rates in WINDOWS] + [(t, 1, {}, m) for t, m in REQUESTS],
                    key=lambda e: (e[0], e[1]))
    for at, kind, rates, model in events:
        assert clock.t <= at, "the test's events must find the loader idle"
        clock.t = at
        if kind == 0:
            await pw.apply_plan(frame(at, rates))
        else:
            cold = not pw.is_resident(model)
            pw.request_started(model)
            await pw.before_forward(model, {"model": model}, "/v1/chat/completions")
            start = datetime.fromtimestamp(at, UTC)
            pw.request_finished(model, RequestEvent("r", start, start, model, None, "openai",
                                                    "/v1/chat/completions", False, 200, cold=cold))
        while pw._hints:  # the fill a cold request starts runs in the background: let it finish
            await asyncio.gather(*list(pw._hints))
    await pw.stop(stop_tracker=False)
    assert all(r["ok"] for r in pw.actuator.last_actions)
    return [(r["ts"].timestamp(), r["action"], r["model"]) for r in pw.actuator.last_actions if r["action"] != "keep"]


def canonical(actions: list[tuple[float, str, str]]) -> list[tuple[float, str, str]]:
    """Time order; at one instant the unloads that make room come before the load. Only before the last request:
    the replay ends there, a service goes on."""
    end = REQUESTS[-1][0]
    return sorted(((round(t, 6), a, m) for t, a, m in actions if t < end), key=lambda x: (x[0], x[1] == "load", x[2]))


@pytest.mark.parametrize("vram_cost", [0.0, 30.0])
async def test_serve_and_replay_take_the_same_actions(tmp_path: Path, vram_cost: float) -> None:
    replayed = canonical(replay_actions(vram_cost))
    served = canonical(await live_actions(tmp_path, vram_cost))
    assert served == replayed
    assert len(served) >= 10  # prefetches, room made for requests, and (at a price) models let go
    if vram_cost == 0.0:
        # Worked by hand: at the first window a (worth 90 s per GB-hour) then d (45) are prefetched; b (19) would
        # have to displace d, which saves more waiting per second (0.025 s against 0.016 s), so it waits.
        assert served[:2] == [(T0, "load", "a"), (T0 + 10, "load", "d")]
        # c, asked for at +100 s, needs 3 GB: a alone frees enough (d is put back)
        assert served[2:4] == [(T0 + 100, "unload", "a"), (T0 + 100, "load", "c")]
