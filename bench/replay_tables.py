"""The README's comparison tables, from one command: every policy on the synthetic workload and the public traces.

    .venv/bin/python bench/replay_tables.py [--traces ../shared/traces] [--only synth,azure,servegen] > tables.md

Budgets are fixed by rules stated here, chosen before any result was seen and
never tuned to them:

* synthetic (`prewarm workload synth --models 20 --users 200 --days 14 --seed 0`,
  sample catalog data/catalog.csv): 16, 24 and 48 GB, the VRAM of common single GPUs;
* a public trace: 10 %, 25 % and 50 % of the total size of the models it names
  (from its catalog), rounded to whole GB: a budget that holds a tenth, a quarter
  and half of everything it could ask for.

Each table is what `prewarm replay` prints for the same trace, catalog and
budgets (the command is printed above each table). The forecast rows take
minutes on the real traces (training + one predict per 5-min window).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from prewarm.catalog import load_catalog
from prewarm.sim.engine import Span
from prewarm.sim.run import POLICY_NAMES, ForecastOptions, ModelCosts, run_replays
from prewarm.sim.trace import Trace, frame_to_trace, read_trace
from prewarm.workload import synth

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = {
    "azure": ("azure-functions-2019-500fn-8h.parquet", "data/catalog-azure-functions.csv"),
    "servegen": ("alibaba-servegen-2025-14d.parquet", "data/catalog-servegen.csv"),
}
FRACTIONS = (0.10, 0.25, 0.50)


def budgets_by_share(costs: ModelCosts) -> list[int]:
    total = sum(costs.sizes)
    return [max(1, round(f * total / 1e9)) * 10**9 for f in FRACTIONS]


def markdown(results, title: str, command: str, notes: list[str]) -> str:
    lines = [f"### {title}", "", f"`{command}`", ""] + [f"{n}  " for n in notes] + [""]
    lines.append("| budget | policy | cold % | cold | added s (total) | p99 added s | VRAM GB-h | loads | loader busy % |")
    lines.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        lines.append(f"| {r.budget / 1e9:g} GB | {r.policy} | {100 * r.cold_start_rate:.2f} | {r.cold_starts} | "
                     f"{r.added_latency_s_total:.0f} | {r.p99_added_latency_s:.1f} | {r.vram_gb_hours:.1f} | "
                     f"{r.loads} | {100 * r.loader_utilization:.0f} |")
    return "\n".join(lines) + "\n"


def one(trace: Trace, catalog: str, budgets: list[int], title: str, command: str) -> str:
    costs = ModelCosts.from_catalog(trace, load_catalog(catalog))
    span = Span.from_warmup(trace, 0.3)
    started = time.perf_counter()
    results = run_replays(trace, costs, budgets, POLICY_NAMES, span, ForecastOptions())
    f = next(r for r in results if r.policy == "forecast")
    notes = [f"{len(trace)} requests, {trace.n_models} models; scored: the last 70 % of the time span",
             costs.note(trace.n_models),
             f"forecast: training {f.extra['train_seconds']:.0f} s over {f.extra['fits']} fits, predicting "
             f"{f.extra['predict_seconds']:.0f} s over {f.extra['forecast_windows']} windows; "
             f"whole table {time.perf_counter() - started:.0f} s"]
    return markdown(results, title, command, notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default=str(ROOT.parent / "shared" / "traces"),
                    help="folder with the public trace files (default: shared/traces beside the checkout)")
    ap.add_argument("--only", default="synth,azure,servegen")
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",")}
    if "synth" in only:
        trace = frame_to_trace(synth(20, 200, 14, 0), "synthetic")
        budgets = [16 * 10**9, 24 * 10**9, 48 * 10**9]
        cmd = ("prewarm workload synth --models 20 --users 200 --days 14 --seed 0 -o synth.parquet && "
               "prewarm replay --trace synth.parquet --catalog data/catalog.csv --vram-budget 16GB,24GB,48GB")
        sys.stdout.write(one(trace, str(ROOT / "data/catalog.csv"), budgets, "Synthetic: 20 models, 200 users, 14 days",
                             cmd) + "\n")
        sys.stdout.flush()
    for key, (fname, catalog) in PUBLIC.items():
        if key not in only:
            continue
        path = Path(args.traces) / fname
        trace = read_trace(path)
        budgets = budgets_by_share(ModelCosts.from_catalog(trace, load_catalog(ROOT / catalog)))
        sizes = ",".join(f"{b // 10**9}GB" for b in budgets)
        cmd = f"prewarm replay --trace {path} --catalog {catalog} --vram-budget {sizes}"
        sys.stdout.write(one(trace, str(ROOT / catalog), budgets, fname, cmd) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
