"""`prewarm replay`: argument handling and output only; the work is in prewarm.sim.run."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from prewarm.catalog import load_catalog
from prewarm.errors import CommandError
from prewarm.forecast.series import load_forecasts
from prewarm.sim import report
from prewarm.sim.engine import Span
from prewarm.sim.run import ForecastOptions, ModelCosts, parse_policies, run_replays
from prewarm.sim.trace import TraceError, read_trace
from prewarm.units import parse_duration, parse_size

DEFAULT_BUDGET = "24GB"


def parse_budgets(text: str | None) -> list[int]:
    parts = [p.strip() for p in (text or DEFAULT_BUDGET).split(",") if p.strip()]
    if not parts:
        raise ValueError("--vram-budget: no budget given")
    budgets = [parse_size(p) for p in parts]
    if any(b <= 0 for b in budgets):
        raise ValueError("--vram-budget: budgets must be positive")
    return budgets


def _cost(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"--vram-cost: {text.strip()!r} is not a number (seconds of waiting per GB-hour)") from None
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"--vram-cost: must be finite and >= 0, got {text.strip()}")
    return v


def check_plot_path(path: str) -> None:
    """Refuse a --plot path that cannot be written before the replay runs, not after."""
    folder = Path(path).expanduser().resolve().parent
    if not folder.is_dir():
        raise ValueError(f"--plot: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--plot: folder {folder} is not writable")
    if not path.lower().endswith(".png"):
        raise ValueError(f"--plot: a .png path expected, got {path}")


def run_replay(args: argparse.Namespace) -> int:
    try:
        budgets = parse_budgets(args.vram_budget)
        policies = parse_policies(args.policy)
        window_s = parse_duration(args.window)
        retrain_s = None if args.retrain_every is None else parse_duration(args.retrain_every)
        try:
            half_life_s = parse_duration(args.recency_half_life)
        except ValueError as exc:
            raise ValueError(f"--recency-half-life: {exc}") from None
        if window_s <= 0 or (retrain_s is not None and retrain_s <= 0) or not 0 < half_life_s < math.inf:
            raise ValueError("--window, --retrain-every and --recency-half-life must be positive")
        if args.train_fraction is not None and not 0.0 < args.train_fraction < 1.0:
            raise ValueError(f"--train-fraction must be in (0, 1), got {args.train_fraction}")
        keep_alive_s = [parse_duration(k.strip()) for k in args.keep_alive.split(",") if k.strip()]
        if not keep_alive_s or any(k <= 0 for k in keep_alive_s):
            raise ValueError(f"--keep-alive: positive durations expected, got {args.keep_alive!r}")
        if args.models_max < 1:
            raise ValueError(f"--models-max must be at least 1 (0, no limit, is the lru policy), not {args.models_max}")
        vram_costs = [_cost(c) for c in args.vram_cost.split(",") if c.strip()]
        if not vram_costs:
            raise ValueError("--vram-cost: no value given")
        if args.plot:
            check_plot_path(args.plot)
        trace = read_trace(args.trace)
        span = Span.from_warmup(trace, args.warmup)
        recorded = None if args.forecasts is None else load_forecasts(args.forecasts)
    except (ValueError, TraceError) as exc:
        raise CommandError(str(exc)) from None
    catalog = load_catalog(args.catalog)
    costs = ModelCosts.from_catalog(trace, catalog)
    notes = [
        f"trace: {trace.source}: {len(trace)} requests, {trace.n_models} models",
        costs.note(trace.n_models),
    ]
    if recorded is not None:
        notes.append(f"forecast: planned from {recorded['made_at'].nunique()} recorded forecasts in "
                     f"{args.forecasts} (no training)")
    if args.format != "table":
        for n in notes:
            print(n, file=sys.stderr)
    fopts = ForecastOptions(window_s=window_s, retrain_every_s=retrain_s, train_fraction=args.train_fraction,
                            recorded=recorded, half_life_s=half_life_s)
    results = run_replays(trace, costs, budgets, policies, span, fopts, keep_alive_s=keep_alive_s,
                          vram_costs=vram_costs, models_max=args.models_max)
    if args.format == "json":
        sys.stdout.write(report.to_json(results) + "\n")
    elif args.format == "csv":
        sys.stdout.write(report.to_csv(results))
    else:
        sys.stdout.write(report.to_table(results, notes))
    if args.plot:
        from prewarm.sim.plot import plot_results

        plot_results(results, trace, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0
