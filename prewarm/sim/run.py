"""One replay run: a trace, a catalog, budgets and policies in; a list of results out (no printing).

Shared by the command, the benchmark, the demo and the tests, so they all replay
the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import pandas as pd

from prewarm.catalog import DEFAULT_RULE, Catalog
from prewarm.planner import HALF_LIFE_S
from prewarm.sim.engine import ReplayResult, Span, replay
from prewarm.sim.policies import ABLATIONS, BASELINES, OPT_IN, POLICY_NAMES
from prewarm.sim.policies.base import Policy
from prewarm.sim.policies.gdsf import GDSFLifetimePolicy, GDSFPolicy
from prewarm.sim.policies.histogram import HistogramPolicy
from prewarm.sim.policies.lfu import LFUPolicy
from prewarm.sim.policies.lru import LRUPolicy, RouterLRUPolicy
from prewarm.sim.policies.ollama import DEFAULT_KEEP_ALIVE_S, OllamaPolicy
from prewarm.sim.policies.oracle import ORACLE_RULES, OraclePolicy
from prewarm.sim.policies.topn import TopNPolicy
from prewarm.sim.trace import Trace

__all__ = ["ABLATIONS", "BASELINES", "POLICY_NAMES", "ForecastOptions", "ModelCosts", "best_oracle", "parse_policies",
           "run_replays"]



@dataclass(frozen=True)
class ForecastOptions:
    """How the forecast policy trains and plans (see prewarm.sim.policies.forecast)."""

    window_s: float = 300.0
    retrain_every_s: float | None = None  # None: one day or a tenth of the trace's span, whichever is shorter
    train_fraction: float | None = None  # None: the warm-up fraction
    recorded: pd.DataFrame | None = None  # forecasts made elsewhere (load_forecasts): planned from, not trained
    half_life_s: float = HALF_LIFE_S  # the planning state's decayed counts (serve's recency_half_life)


@dataclass
class ModelCosts:
    sizes: list[int]
    load_seconds: list[float]
    defaulted: list[str] = field(default_factory=list)

    @classmethod
    def from_catalog(cls, trace: Trace, catalog: Catalog) -> ModelCosts:
        entries = [catalog.get(name) for name in trace.names]
        return cls(
            sizes=[e.size_bytes for e in entries],
            load_seconds=[float(e.load_seconds) for e in entries],
            defaulted=[name for name in trace.names if name not in catalog],
        )

    def note(self, n_models: int) -> str:
        if not self.defaulted:
            return f"catalog: all {n_models} models found"
        return (f"catalog: {len(self.defaulted)} of {n_models} models not in the catalog, "
                f"sized by the default rule ({DEFAULT_RULE})")


def parse_policies(text: str | None) -> list[str]:
    if not text:
        return list(POLICY_NAMES)
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICY_NAMES + ABLATIONS + OPT_IN]
    if bad or not names:
        raise ValueError(f"unknown policy {', '.join(bad) or text!r}; choose from "
                         f"{','.join(POLICY_NAMES + ABLATIONS + OPT_IN)}")
    return list(dict.fromkeys(names))


def _factories(trace: Trace, span: Span, fopts: ForecastOptions
               ) -> tuple[dict[str, Callable[[], Policy]], Callable[[float], Policy]]:
    """The policies without a sweep, and forecast at a given VRAM cost (ollama and the oracle are made in
    run_replays: one per keep-alive, one per clairvoyant rule)."""
    factories: dict[str, Callable[[], Policy]] = {
        "lru": LRUPolicy,
        "topn": TopNPolicy,
        "histogram": HistogramPolicy,
        "gdsf": GDSFPolicy,
        "gdsf-lifetime": GDSFLifetimePolicy,
        "lfu": LFUPolicy,
    }

    from prewarm.sim.policies.forecast import (
        ForecastNoSeasonalPolicy,
        ForecastNoUsersPolicy,
        ForecastPerfectPolicy,
        ForecastPolicy,
        ForecastRecencyPolicy,
        ForecastSchedule,
        PerfectSchedule,
        RecencySchedule,
        RecordedSchedule,
    )

    shared: dict[tuple[str, tuple[str, ...]], ForecastSchedule] = {}

    def schedule(kind: type[ForecastSchedule], without: tuple[str, ...] = ()) -> ForecastSchedule:
        key = (kind.__name__, without)
        if key not in shared:
            t0, t1 = float(trace.ts[0]), float(trace.ts[-1])
            train_end = span.scored_from if fopts.train_fraction is None else t0 + fopts.train_fraction * (t1 - t0)
            # a day of refits is one fit on a short trace (8 h: the first 2.4 h only); a tenth of the span
            # keeps refitting on what was seen so far, and a day bounds the fitting cost of long traces
            retrain = fopts.retrain_every_s if fopts.retrain_every_s is not None else min(86400.0, 0.1 * (t1 - t0))
            shared[key] = kind(trace, train_end, fopts.window_s, max(retrain, fopts.window_s), without=without)
        return shared[key]

    def forecasting() -> ForecastSchedule:
        if fopts.recorded is None:
            return schedule(ForecastSchedule)
        if ("recorded", ()) not in shared:
            shared[("recorded", ())] = RecordedSchedule(trace, span.scored_from, fopts.window_s, fopts.window_s,
                                                  recorded=fopts.recorded)
        return shared[("recorded", ())]

    hl = fopts.half_life_s
    factories["forecast-perfect"] = lambda: ForecastPerfectPolicy(schedule(PerfectSchedule), half_life_s=hl)
    factories["forecast-recency"] = lambda: ForecastRecencyPolicy(schedule(RecencySchedule), half_life_s=hl)
    factories["forecast-nousers"] = lambda: ForecastNoUsersPolicy(schedule(ForecastSchedule, ("users",)),
                                                                  half_life_s=hl)
    factories["forecast-noseasonal"] = lambda: ForecastNoSeasonalPolicy(schedule(ForecastSchedule, ("seasonal",)),
                                                                        half_life_s=hl)
    return factories, lambda cost: ForecastPolicy(forecasting(), cost, hl)


def run_replays(
    trace: Trace,
    costs: ModelCosts,
    budgets: Sequence[int],
    policies: Sequence[str],
    span: Span,
    fopts: ForecastOptions = ForecastOptions(),
    timeline_for: str | None = "forecast",
    keep_alive_s: Sequence[float] = (DEFAULT_KEEP_ALIVE_S,),
    vram_costs: Sequence[float] = (0.0,),
    models_max: int = 4,
) -> list[ReplayResult]:
    """Every (budget, policy) pair, budgets outer; the forecaster is trained once and shared by all budgets.

    ``ollama`` runs once per keep-alive and ``forecast`` once per VRAM cost (a sweep: its figures carry
    ``keep_alive_s`` / ``vram_cost``); the timeline is kept for the first run of ``timeline_for``."""
    factories, forecast_at = _factories(trace, span, fopts)
    out: list[ReplayResult] = []
    for budget in budgets:
        for name in policies:
            timeline = name == timeline_for
            if name == "oracle":
                out.append(best_oracle(trace, costs, budget, span, timeline))
                continue
            if name == "ollama":
                makers: list[Callable[[], Policy]] = [partial(OllamaPolicy, k) for k in keep_alive_s]
            elif name == "forecast":
                makers = [partial(forecast_at, c) for c in vram_costs]
            elif name == "router":
                makers = [partial(RouterLRUPolicy, models_max)]
            else:
                makers = [factories[name]]
            for k, make in enumerate(makers):
                out.append(replay(trace, costs.sizes, costs.load_seconds, budget, make(), span,
                                  record_timeline=timeline and k == 0))
    return out


def best_oracle(trace: Trace, costs: ModelCosts, budget: int, span: Span, record_timeline: bool = False) -> ReplayResult:
    """The oracle of a cell: the best of its clairvoyant rules there (fewest cold starts, then least added wait);
    ``oracle_rule`` in its figures says which, ``oracle_rules`` what each gave."""
    runs = [replay(trace, costs.sizes, costs.load_seconds, budget, OraclePolicy(rule, prefetch), span, record_timeline)
            for rule in ORACLE_RULES for prefetch in (True, False)]
    best = min(runs, key=lambda r: (r.cold_starts, r.added_latency_s_total))
    best.extra["oracle_rules"] = {r.extra["oracle_rule"]: r.cold_starts for r in runs}
    return best
