"""The README's comparison tables, from one command: every policy on the synthetic workload and the public traces.

    .venv/bin/python bench/replay_tables.py [--traces ../shared/traces] [--only synth,azure,servegen]
        [--seeds 0,1,2,3,4] [--plots DIR] [--jobs 2] > tables.md

Budgets are fixed by rules stated here, chosen before any result was seen and
never tuned to them:

* synthetic (`prewarm workload synth --models 20 --users 200 --days 14 --seed S`,
  sample catalog data/catalog.csv, seeds 0-4): 16, 24 and 48 GB, the VRAM of
  common single GPUs; each row is the mean over the seeds, with the paired 95 %
  interval (Student t over the seeds) of forecast minus the baseline with the
  lowest seed-mean in that cell;
* a public trace: 10 %, 25 % and 50 % of the total size of the models it names
  (from its catalog), rounded to whole GB.

Every policy runs (forecast at ``vram_cost`` 0 in the main table); the sweep
tables run ``ollama`` at keep-alives 1m, 5m, 15m and 60m and ``forecast`` at
``--vram-cost`` 0,1,3,10,30,100,300 for the Pareto check (a forecast point with no
more GB-hours and at least 25 % fewer cold starts than each keep-alive). The
forecaster is trained once per trace and shared by every budget and cost; the
ablations (forecast-recency, -nousers, -noseasonal) train their own.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from prewarm.catalog import load_catalog
from prewarm.sim import (
    ABLATIONS,
    BASELINES,
    POLICY_NAMES,
    ForecastOptions,
    ModelCosts,
    ReplayResult,
    Span,
    Trace,
    frame_to_trace,
    read_trace,
    run_replays,
)
from prewarm.sim.report import duration
from prewarm.workload import synth

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = {
    "azure": ("azure-functions-2019-500fn-8h.parquet", "data/catalog-azure-functions.csv", "Azure Functions 2019"),
    "servegen": ("alibaba-servegen-2025-14d.parquet", "data/catalog-servegen.csv", "Alibaba ServeGen 2025"),
}
FRACTIONS = (0.10, 0.25, 0.50)
KEEP_ALIVES = (60.0, 300.0, 900.0, 3600.0)
VRAM_COSTS = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
# Student t quantiles, two-sided 95 %, by degrees of freedom (seeds - 1)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def budgets_by_share(costs: ModelCosts) -> list[int]:
    total = sum(costs.sizes)
    return [max(1, round(f * total / 1e9)) * 10**9 for f in FRACTIONS]


def replay_all(trace: Trace, costs: ModelCosts, budgets: list[int], policies: Sequence[str]) -> list[ReplayResult]:
    span = Span.from_warmup(trace, 0.3)
    return run_replays(trace, costs, budgets, policies, span, ForecastOptions(), timeline_for=None,
                       keep_alive_s=KEEP_ALIVES, vram_costs=VRAM_COSTS)


def main_rows(results: list[ReplayResult]) -> list[ReplayResult]:
    """One result per policy and budget: ollama at 5 min, forecast at vram_cost 0."""
    return [r for r in results
            if (r.policy != "ollama" or r.extra.get("keep_alive_s") == 300.0)
            and (r.policy != "forecast" or r.extra.get("vram_cost") == 0.0)]


class Cell:
    """One (trace, budget) cell: per policy the cold-start rates and GB-hours of each seed (one for a real trace)."""

    def __init__(self, trace: str, budget: int) -> None:
        self.trace, self.budget = trace, budget
        self.cold: dict[str, list[float]] = {}
        self.gbh: dict[str, list[float]] = {}
        self.sweep: dict[tuple[str, float], list[tuple[float, float]]] = {}

    def add(self, results: list[ReplayResult]) -> None:
        for r in main_rows(results):
            if r.budget == self.budget:
                self.cold.setdefault(r.policy, []).append(100 * r.cold_start_rate)
                self.gbh.setdefault(r.policy, []).append(r.vram_gb_hours)
        for r in results:
            if r.budget == self.budget and r.policy in ("ollama", "forecast"):
                key = (r.policy, float(r.extra["keep_alive_s" if r.policy == "ollama" else "vram_cost"]))
                self.sweep.setdefault(key, []).append((100 * r.cold_start_rate, r.vram_gb_hours))

    def mean(self, policy: str) -> float:
        return statistics.fmean(self.cold[policy])

    def best_baseline(self) -> str:
        return min(BASELINES, key=self.mean)

    def interval(self) -> tuple[float, float, float] | None:
        """Mean and paired 95 % interval of forecast - best baseline, in points; None with one seed."""
        best = self.best_baseline()
        d = [f - b for f, b in zip(self.cold["forecast"], self.cold[best], strict=True)]
        if len(d) < 2:
            return None
        half = T95.get(len(d) - 1, 1.96) * statistics.stdev(d) / math.sqrt(len(d))
        m = statistics.fmean(d)
        return m, m - half, m + half

    def reduction(self) -> float:
        return 1.0 - self.mean("forecast") / self.mean(self.best_baseline()) if self.mean(self.best_baseline()) else 0.0

    def pareto(self) -> list[str]:
        """For each ollama keep-alive: the forecast cost points with no more GB-hours and >= 25 % fewer cold."""
        out = []
        for ka in KEEP_ALIVES:
            o_cold, o_gbh = _mean_pair(self.sweep[("ollama", ka)])
            ok = [c for c in VRAM_COSTS
                  if (p := _mean_pair(self.sweep[("forecast", c)]))[1] <= o_gbh and p[0] <= 0.75 * o_cold]
            out.append(f"ollama {duration(ka)} ({o_cold:.2f} %, {o_gbh:.0f} GB-h): "
                       + (f"forecast c={ok[0]:g} and {len(ok) - 1} more" if ok else "**no forecast point**"))
        return out


def _mean_pair(xs: Sequence[tuple[float, float]]) -> tuple[float, float]:
    return statistics.fmean(x[0] for x in xs), statistics.fmean(x[1] for x in xs)


def cell_table(title: str, cells: list[Cell], notes: list[str]) -> str:
    names = [p for p in POLICY_NAMES]
    lines = [f"### {title}", ""] + [f"{n}  " for n in notes] + [""]
    lines.append("| budget | " + " | ".join(names) + " | forecast - best baseline (points) |")
    lines.append("|---:|" + "---:|" * len(names) + "---|")
    for c in cells:
        best = c.best_baseline()
        row = []
        for p in names:
            txt = f"{c.mean(p):.2f}<br>{statistics.fmean(c.gbh[p]):.0f} GB-h"
            row.append(f"**{txt}**" if p in (best, "forecast") else txt)
        iv = c.interval()
        diff = (f"{iv[0]:+.2f} [{iv[1]:+.2f}, {iv[2]:+.2f}] vs {best}" if iv
                else f"{c.mean('forecast') - c.mean(best):+.2f} vs {best}")
        lines.append(f"| {c.budget / 1e9:g} GB | " + " | ".join(row) + f" | {diff} |")
    lines.append("")
    lines.append("| budget | planner's gap: forecast-perfect / oracle | forecaster's gap: forecast / forecast-perfect | "
                 "forecast vs best baseline | Pareto (vram-cost sweep vs ollama keep-alives) |")
    lines.append("|---:|---:|---:|---:|---|")
    for c in cells:
        fp, o, f = c.mean("forecast-perfect"), c.mean("oracle"), c.mean("forecast")
        lines.append(f"| {c.budget / 1e9:g} GB | {fp:.2f} / {o:.2f} | {f:.2f} / {fp:.2f} | "
                     f"{100 * c.reduction():+.1f} % fewer | " + "<br>".join(c.pareto()) + " |")
    return "\n".join(lines) + "\n"


def verdict(cells: list[Cell]) -> str:
    """The decision-layer issue's must-show, checked on these cells and printed as it stands."""
    lost = [(c.trace, c.budget, c.best_baseline()) for c in cells if c.mean("forecast") > c.mean(c.best_baseline())]
    perfect_worse = [(c.trace, c.budget) for c in cells if c.mean("forecast-perfect") > c.mean("forecast")]
    below = [(c.trace, c.budget, p) for c in cells for p in POLICY_NAMES + ABLATIONS
             if c.mean(p) < c.mean("oracle")]
    mean_red = statistics.fmean(c.reduction() for c in cells)
    lines = ["### Verdict", "",
             f"- cells where forecast has more cold starts than the best baseline: {len(lost)} of {len(cells)}"
             + (" (" + "; ".join(f"{t} {b / 1e9:g} GB vs {p}" for t, b, p in lost) + ")" if lost else ""),
             f"- mean over the cells of (1 - forecast / best baseline): {100 * mean_red:.1f} %",
             f"- cells where forecast-perfect is above forecast: {len(perfect_worse)}"
             + (" (" + "; ".join(f"{t} {b / 1e9:g} GB" for t, b in perfect_worse) + ")" if perfect_worse else ""),
             f"- policies below the oracle: {len(below)}"
             + (" (" + "; ".join(f"{t} {b / 1e9:g} GB {p}" for t, b, p in below) + ")" if below else "")]
    return "\n".join(lines) + "\n"


SYNTH_BUDGETS = [16 * 10**9, 24 * 10**9, 48 * 10**9]
# The work of one trace, split so the worker processes share it evenly: each part trains what it needs (the
# forecast schedules are per part and shared by its budgets and costs), the oracle's rules run per budget.
FORECAST_PARTS: tuple[tuple[str, ...], ...] = (("forecast",), ("forecast-nousers",), ("forecast-noseasonal",),
                                               ("forecast-perfect", "forecast-recency"))
ORDER = POLICY_NAMES + ABLATIONS
TraceKey = tuple[str, int]  # ("synth", seed) or (public trace key, 0)


@functools.lru_cache(maxsize=2)
def load(key: TraceKey, traces: str) -> tuple[Trace, ModelCosts, list[int]]:
    """A trace, its costs and its budgets (cached: a worker runs several parts of one trace)."""
    name, seed = key
    if name == "synth":
        trace = frame_to_trace(synth(20, 200, 14, seed), f"synthetic seed {seed}")
        return trace, ModelCosts.from_catalog(trace, load_catalog(ROOT / "data/catalog.csv")), SYNTH_BUDGETS
    fname, catalog, _ = PUBLIC[name]
    trace = read_trace(Path(traces) / fname)
    costs = ModelCosts.from_catalog(trace, load_catalog(ROOT / catalog))
    return trace, costs, budgets_by_share(costs)


def replay_part(key: TraceKey, traces: str, policies: tuple[str, ...], budget: int | None
                ) -> tuple[TraceKey, list[ReplayResult], float]:
    """One part of a trace's replays (every budget, or one): its results and the seconds it took."""
    t0 = time.perf_counter()
    trace, costs, budgets = load(key, traces)
    results = replay_all(trace, costs, budgets if budget is None else [budget], list(policies))
    return key, results, time.perf_counter() - t0


def parts(key: TraceKey, traces: str) -> list[tuple[TraceKey, str, tuple[str, ...], int | None]]:
    budgets = SYNTH_BUDGETS if key[0] == "synth" else budgets_by_share(load(key, traces)[1])
    out: list[tuple[TraceKey, str, tuple[str, ...], int | None]] = [(key, traces, p, None) for p in FORECAST_PARTS]
    out += [(key, traces, ("oracle",), b) for b in budgets]
    out.append((key, traces, BASELINES, None))
    return out


def group_table(key: str, seeds: list[int], by_trace: dict[TraceKey, list[ReplayResult]],
                seconds: dict[TraceKey, float], traces: str, plots: str | None) -> tuple[str, list[Cell]]:
    """The tables of one trace (or of the synthetic seeds) from the results of all its parts."""
    keys = [("synth", s) for s in seeds] if key == "synth" else [(key, 0)]
    budgets = SYNTH_BUDGETS if key == "synth" else load(keys[0], traces)[2]
    title = "Synthetic: 20 models, 200 users, 14 days" if key == "synth" else PUBLIC[key][2]
    cells = [Cell(title, b) for b in budgets]
    for k in keys:
        results = sorted(by_trace[k], key=lambda r: (r.budget, ORDER.index(r.policy)))
        for c in cells:
            c.add(results)
        if plots is not None:
            trace = load(k, traces)[0]
            _plot(plots, results, trace, f"synthetic-seed{k[1]}" if key == "synth" else key)
    cpu = f"{sum(seconds[k] for k in keys):.0f} s of worker time"
    if key == "synth":
        notes = [f"`prewarm workload synth --models 20 --users 200 --days 14 --seed S` for S in "
                 f"{','.join(map(str, seeds))}, catalog data/catalog.csv; cold-start rate (%) and VRAM GB-hours, "
                 "means over the seeds", cpu]
        return cell_table(title, cells, notes) + "\n" + ablation_table(title, cells), cells
    fname, catalog, _ = PUBLIC[key]
    trace = load(keys[0], traces)[0]
    sizes = ",".join(f"{b // 10**9}GB" for b in budgets)
    notes = [f"`prewarm replay --trace {fname} --catalog {catalog} --vram-budget {sizes} "
             "--keep-alive 1m,5m,15m,60m --vram-cost 0,1,3,10,30,100,300`",
             f"{len(trace)} requests, {trace.n_models} models; scored: the last 70 % of the time span; {cpu}"]
    return cell_table(f"{title} ({fname})", cells, notes) + "\n" + ablation_table(title, cells), cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default=str(ROOT.parent / "shared" / "traces"),
                    help="folder with the public trace files (default: shared/traces beside the checkout)")
    ap.add_argument("--only", default="synth,azure,servegen", help="comma-separated: synth, azure, servegen")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="synthetic workload seeds")
    ap.add_argument("--plots", default=None, help="folder for one Pareto/budget PNG per trace")
    ap.add_argument("--jobs", type=int, default=1,
                    help="worker processes; each trace's replays are split into parts (each forecaster variant, "
                         "the oracle per budget, the baselines) that the workers share, the longest first")
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s != "synth" and s not in PUBLIC]
    if bad:
        ap.error(f"--only: unknown {', '.join(bad)}; choose from synth, {', '.join(PUBLIC)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    keys: list[TraceKey] = [(k, 0) for k in ("servegen", "azure") if k in only]
    keys += [("synth", s) for s in seeds] if "synth" in only else []
    # longest first: ServeGen's parts, then Azure's, then the synthetic seeds; within a trace the forecast
    # parts (they train) before the oracle's and the baselines
    todo = [p for k in keys for p in parts(k, args.traces)]
    by_trace: dict[TraceKey, list[ReplayResult]] = {k: [] for k in keys}
    seconds: dict[TraceKey, float] = dict.fromkeys(keys, 0.0)

    def collect(key: TraceKey, results: list[ReplayResult], took: float) -> None:
        by_trace[key].extend(results)
        seconds[key] += took

    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for f in [pool.submit(replay_part, *p) for p in todo]:
                collect(*f.result())
    else:
        for p in todo:
            collect(*replay_part(*p))
    groups = [g for g in ("synth", *PUBLIC) if g in only]
    done = {g: group_table(g, seeds, by_trace, seconds, args.traces, args.plots) for g in groups}
    for g in groups:
        sys.stdout.write(done[g][0] + "\n")
    all_cells = [c for g in groups for c in done[g][1]]
    sys.stdout.write(verdict(all_cells) + f"\nall tables: {time.perf_counter() - started:.0f} s "
                     f"({args.jobs} worker process{'es' if args.jobs > 1 else ''})\n")


def ablation_table(title: str, cells: list[Cell]) -> str:
    """The forecaster's parts, each taken out in turn (cold %, same planner): where each part earns its keep."""
    names = ("forecast", *ABLATIONS, "forecast-perfect")
    lines = [f"Ablations, {title}: cold-start rate (%) with a part of the forecaster taken out", "",
             "| budget | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for c in cells:
        best = min(ABLATIONS + ("forecast",), key=c.mean)
        lines.append(f"| {c.budget / 1e9:g} GB | " + " | ".join(
            (f"**{c.mean(p):.3f}**" if p == best else f"{c.mean(p):.3f}") for p in names) + " |")
    return "\n".join(lines) + "\n"


def _plot(folder: str | None, results: list[ReplayResult], trace: Trace, name: str) -> None:
    if folder is None:
        return
    from prewarm.sim.plot import plot_results

    Path(folder).mkdir(parents=True, exist_ok=True)
    plot_results(results, trace, str(Path(folder) / f"{name}.png"))


if __name__ == "__main__":
    main()
