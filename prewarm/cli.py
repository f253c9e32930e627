"""The ``prewarm`` command line: argument handling only (DESIGN.md, Command line contract).

Each sub-command's work lives in the module that owns it; this file parses
arguments, imports that module lazily (so ``prewarm sql`` does not pay for
statsmodels) and turns expected errors into a one-line reason and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from prewarm import __version__
from prewarm.backends.registry import kind_names
from prewarm.errors import PrewarmError
from prewarm.sim.policies import ABLATIONS, POLICY_NAMES


def _lazy(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(module).__getattribute__(func)(args)

    return run


class _Help(argparse.HelpFormatter):
    """Shows each option's default after its help, unless it has none worth showing (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


LOG_LEVELS = ("debug", "info", "warning", "error")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="prewarm",
        description="Predictive prewarming proxy for Ollama, vLLM and OpenAI-compatible servers.",
        formatter_class=_Help,
    )
    p.add_argument("--version", action="version", version=f"prewarm {__version__}")
    p.add_argument("--log-level", choices=LOG_LEVELS, default=None,
                   help="how much the service logs on stderr (default: info for serve and emulate, error for the demo)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("serve", formatter_class=_Help, help="run the proxy, forecaster schedule and prewarmer")
    s.add_argument("--upstream", help="upstream base URL (Ollama, vLLM or the emulator)")
    s.add_argument("--upstream-kind", choices=kind_names(), help="default: ollama")
    s.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:11435)")
    s.add_argument("--db", help="DuckDB file (default data/prewarm.duckdb)")
    s.add_argument("--config", help="TOML config file")
    s.add_argument("--vram-budget", help="VRAM budget, e.g. 24GB or 22GiB")
    s.add_argument("--catalog", help="catalog CSV model,size_bytes,load_seconds")
    s.add_argument("--vram-cost", help="seconds of client waiting you would trade for one GB-hour of VRAM held "
                                       "(default 0: spend the budget for the fewest cold starts)")
    s.add_argument("--no-schedule", action="store_true",
                   help="no scheduled training, forecasting or planned loads (the VRAM budget is still enforced)")
    s.set_defaults(func=_lazy("prewarm.commands.serve", "run"))

    s = sub.add_parser("emulate", formatter_class=_Help, help="run the built-in Ollama emulator (no GPU needed)")
    s.add_argument("--listen", default="127.0.0.1:11434", help="HOST:PORT the emulator listens on")
    s.add_argument("--catalog", help="catalog CSV (default: the sample catalog)")
    s.add_argument("--vram", default="24GB", help="emulated VRAM, e.g. 24GB")
    s.add_argument("--time-scale", type=float, default=1.0, help="multiply every load time by this")
    s.add_argument("--tokens-per-second", type=float, default=200.0, help="emulated generation speed")
    s.add_argument(
        "--vllm-model",
        metavar="NAME",
        help="serve one catalog model as a vLLM server with sleep mode (/sleep, /wake_up, /is_sleeping) instead",
    )
    s.add_argument("--sglang-model", metavar="NAME",
                   help="serve one catalog model as an SGLang stand-in with its memory saver "
                        "(/release_memory_occupation, /resume_memory_occupation) instead")
    s.add_argument("--sglang-cpu-backup", action="store_true",
                   help="the SGLang stand-in runs as with --enable-weights-cpu-backup (a resume copies the weights "
                        "back instead of needing /update_weights_from_disk)")
    s.set_defaults(func=_lazy("prewarm.emulator.main", "run"))

    s = sub.add_parser("sql", formatter_class=_Help, help="run a read-only SQL query on the database")
    s.add_argument("--db", help="DuckDB file (default data/prewarm.duckdb)")
    s.add_argument("--config", help="TOML config file")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table for people; csv (a header, then rows) or json (one array of objects) for scripts")
    s.add_argument("--allow-files", action="store_true",
                   help="let the query read files (read_csv, read_parquet, glob...); only on the database file "
                        "itself, never through a running service")
    s.add_argument("query", help="one read-only SQL statement")
    s.set_defaults(func=_lazy("prewarm.commands.sql", "run_sql"))

    s = sub.add_parser("status", formatter_class=_Help, help="summary of requests, cold starts, forecasts and actions")
    s.add_argument("--db", help="DuckDB file (default data/prewarm.duckdb)")
    s.add_argument("--config", help="TOML config file")
    s.set_defaults(func=_lazy("prewarm.commands.sql", "run_status"))

    s = sub.add_parser("train", formatter_class=_Help, help="train the forecaster on the request log or a trace")
    s.add_argument("--db", help="DuckDB file (default data/prewarm.duckdb)")
    s.add_argument("--config", help="TOML config file")
    s.add_argument("--trace", help="learn from a trace file (CSV/Parquet ts,model[,user]); results still go to --db")
    s.add_argument("--window", help="forecast window, e.g. 5m (default from config)")
    s.add_argument("--models-dir", help="where run artifacts go (default models/)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_lazy("prewarm.commands.train", "run_train"))

    s = sub.add_parser("forecast", formatter_class=_Help, help="write forecasts for the next windows from the latest model")
    s.add_argument("--db", help="DuckDB file (default data/prewarm.duckdb)")
    s.add_argument("--config", help="TOML config file")
    s.add_argument("--models-dir", help="where run artifacts are (default models/)")
    s.add_argument("--horizon", type=int, help="windows ahead (default from config)")
    s.set_defaults(func=_lazy("prewarm.commands.train", "run_forecast"))

    s = sub.add_parser("plan", formatter_class=_Help, help="show (and with --apply, carry out) the prewarm plan now")
    s.add_argument("--db", help="DuckDB file (default data/prewarm.duckdb)")
    s.add_argument("--config", help="TOML config file")
    s.add_argument("--upstream", help="upstream base URL")
    s.add_argument("--vram-budget", help="VRAM budget, e.g. 24GB")
    s.add_argument("--catalog", help="catalog CSV")
    s.add_argument("--apply", action="store_true", help="carry the plan out on the upstream")
    s.set_defaults(func=_lazy("prewarm.commands.plan", "run_plan"))

    s = sub.add_parser("workload", formatter_class=_Help, help="synthetic workloads")
    wsub = s.add_subparsers(dest="workload_command", metavar="KIND", required=True)
    w = wsub.add_parser("synth", formatter_class=_Help,
                        help="write a synthetic trace (Zipf popularity, daily/weekly cycles, users)")
    w.add_argument("--models", type=int, default=20, help="how many models the trace asks for")
    w.add_argument("--users", type=int, default=100, help="how many users send requests")
    w.add_argument("--days", type=float, default=14, help="length of the trace in days")
    w.add_argument("--seed", type=int, default=0, help="random seed (same seed, same trace)")
    w.add_argument("--rate", type=float, default=None, help="mean requests per user per active hour")
    w.add_argument("-o", "--output", required=True, help="FILE.parquet or FILE.csv")
    w.set_defaults(func=_lazy("prewarm.workload", "run_synth"))

    s = sub.add_parser("replay", formatter_class=_Help, help="replay a trace under several policies and compare cold starts")
    s.add_argument("--trace", required=True, help="CSV/Parquet (ts,model[,user]) or a prewarm DuckDB file")
    s.add_argument("--catalog", help="catalog CSV model,size_bytes,load_seconds")
    s.add_argument("--vram-budget", help="budget or comma-separated budgets to sweep, e.g. 24GB,48GB")
    s.add_argument("--policy", help="comma-separated, from: " + ",".join(POLICY_NAMES) + " (default: these), and "
                   "the forecaster's ablations " + ",".join(ABLATIONS) + ", and router (llama.cpp's router "
                   "evicting on its own: least recently used past --models-max models)")
    s.add_argument("--models-max", type=int, default=4,
                   help="router policy: the router's --models-max (llama.cpp's default is 4)")
    s.add_argument("--keep-alive", default="5m",
                   help="ollama policy: keep-alive or comma-separated keep-alives to sweep, e.g. 1m,5m,15m,60m")
    s.add_argument("--vram-cost", default="0",
                   help="forecast policy: seconds of client waiting worth one GB-hour of VRAM held, or a "
                        "comma-separated sweep, e.g. 0,1,3,10,30,100,300 (0: spend the budget for the fewest cold starts)")
    s.add_argument("--forecasts", default=None, metavar="FILE",
                   help="forecast policy: plan from these recorded forecasts (a prewarm database's forecasts "
                        "table, or CSV/Parquet with its columns; times as the trace's) instead of training")
    s.add_argument("--recency-half-life", default="6h",
                   help="forecast policies: half-life of the planning state's decayed request counts (serve's "
                        "recency_half_life)")
    s.add_argument("--warmup", type=float, default=0.3, help="fraction of the trace's span not scored")
    s.add_argument("--train-fraction", type=float, default=None,
                   help="forecast policy: initial training part (default = --warmup)")
    s.add_argument("--retrain-every", default=None,
                   help="forecast policy: refit interval in trace time (default: 1d or a tenth of the trace, the shorter)")
    s.add_argument("--window", default="5m", help="forecast/plan window")
    s.add_argument("--format", choices=["table", "json", "csv"], default="table", help="output format")
    s.add_argument("--plot", help="write a PNG comparing the policies")
    s.set_defaults(func=_lazy("prewarm.commands.replay", "run_replay"))

    s = sub.add_parser("config", formatter_class=_Help, help="print every setting with its default and meaning")
    s.add_argument("--example", action="store_true", help="as a TOML file to edit (the only form for now)")
    s.set_defaults(func=_lazy("prewarm.config_example", "run"))

    s = sub.add_parser("demo", formatter_class=_Help,
                       help="emulator + proxy + forecaster + prewarmer, end to end, in a few minutes")
    s.add_argument("--workdir", help="where the demo's database goes; kept after the demo (default: a new temporary folder)")
    s.add_argument("--quick", action="store_true", help="a shorter run")
    s.set_defaults(func=_lazy("prewarm.commands.demo", "run"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.log_level is not None:
        import logging

        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (PrewarmError, FileNotFoundError) as exc:
        print(f"prewarm {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
