"""Rendering replay results as a table, JSON or CSV (DESIGN.md command-line contract)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prewarm.sim.engine import ReplayResult

CSV_FIELDS = [
    "policy", "budget", "budget_gb", "requests", "cold_starts", "cold_start_rate", "added_latency_s_total",
    "p99_added_latency_s", "mean_added_latency_s", "vram_gb_hours", "loads", "evictions", "scored_from",
    "scored_to", "oversized_requests", "oversized_models", "loader_utilization", "replay_seconds",
]

QUIET_WHEN_ZERO = ("unserved_requests", "failed_loads", "cancelled_loads")


def _when(ts: float) -> str:
    """Epoch-scale times (a serve database) read better as dates; trace seconds stay seconds."""
    if ts > 1e9:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{ts:.0f} s"


def label(r: ReplayResult) -> str:
    """A result's name in tables and legends: the policy, with its swept parameter where it has one."""
    if "keep_alive_s" in r.extra:
        return f"{r.policy} {duration(float(r.extra['keep_alive_s']))}"
    if "models_max" in r.extra:
        return f"{r.policy} max {int(r.extra['models_max'])}"
    if "vram_cost" in r.extra and r.policy == "forecast":
        return f"{r.policy} c={r.extra['vram_cost']:g}"
    return r.policy


def duration(s: float) -> str:
    return f"{s / 3600:g}h" if s >= 3600 and s % 3600 == 0 else f"{s / 60:g}m" if s % 60 == 0 else f"{s:g}s"


def to_json(results: Sequence[ReplayResult]) -> str:
    return json.dumps([r.as_dict() for r in results], indent=2)


def to_csv(results: Sequence[ReplayResult]) -> str:
    rows = [r.as_dict() for r in results]
    extra = sorted({k for r in rows for k in r} - set(CSV_FIELDS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS + extra, lineterminator="\n")
    w.writeheader()
    for r in rows:
        r = dict(r)
        r["oversized_models"] = ";".join(r["oversized_models"])
        w.writerow(r)
    return buf.getvalue()


SUGGEST_POINTS = 1.0  # percentage points of cold-start rate ...
SUGGEST_STEP = 0.10  # ... per this much more budget: the knee a person choosing a budget looks for


def suggested_budget(results: Sequence[ReplayResult]) -> int | None:
    """The smallest swept budget beyond which the best policy gains less than SUGGEST_POINTS of cold-start rate
    per SUGGEST_STEP more budget, towards every larger budget swept; None with fewer than two budgets.

    "The best policy" is the lowest cold-start rate at each budget, whichever policy
    that is, so the suggestion does not depend on which policy is run. A request for
    a model the budget leaves out counts as cold here (it is worse than cold: it is
    not served), so every budget is scored on the same requests.
    """
    best: dict[int, float] = {}
    for r in results:
        asked = r.requests + r.oversized_requests
        rate = (r.cold_starts + r.oversized_requests) / asked if asked else 0.0
        best[r.budget] = min(best.get(r.budget, 1.0), rate)
    budgets = sorted(best)
    if len(budgets) < 2:
        return None
    for i, b in enumerate(budgets):
        if all(100 * (best[b] - best[c]) < SUGGEST_POINTS * (c - b) / (SUGGEST_STEP * b) for c in budgets[i + 1:]):
            return b
    return budgets[-1]


def to_table(results: Sequence[ReplayResult], notes: Sequence[str] = ()) -> str:
    header = ["budget", "policy", "requests", "cold starts", "cold %", "added s total", "p99 added s",
              "VRAM GB-h", "loads", "evictions", "loader busy %"]
    rows: list[list[str]] = []
    for r in results:
        rows.append([
            f"{r.budget / 1e9:g} GB", label(r), str(r.requests), str(r.cold_starts),
            f"{100 * r.cold_start_rate:.2f}", f"{r.added_latency_s_total:.0f}", f"{r.p99_added_latency_s:.1f}",
            f"{r.vram_gb_hours:.1f}", str(r.loads), str(r.evictions), f"{100 * r.loader_utilization:.0f}",
        ])
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(header)]
    lines = list(notes)
    if results:
        lines.append(f"scored: {_when(results[0].scored_from)} .. {_when(results[0].scored_to)}")
    lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=False)))
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=False)))
    told: set[int] = set()
    for r in results:
        if r.oversized_models and r.budget not in told:
            told.add(r.budget)
            lines.append(f"{r.budget / 1e9:g} GB leaves {len(r.oversized_models)} model(s) out (larger than the "
                         f"budget; their {r.oversized_requests} requests are not scored, for every policy): "
                         + ", ".join(r.oversized_models[:10]) + (" ..." if len(r.oversized_models) > 10 else ""))
    suggested = suggested_budget(results)
    if suggested is not None:
        lines.append(f"suggested budget: {suggested / 1e9:g} GB (beyond it the best policy's cold-start rate improves "
                     f"by less than {SUGGEST_POINTS:g} point per further {100 * SUGGEST_STEP:g} % of budget)")
    shown = [(r, {k: v for k, v in r.extra.items() if not (k in QUIET_WHEN_ZERO and v == 0)
                  and not isinstance(v, dict) and k not in ("keep_alive_s", "vram_cost")}) for r in results]
    extras = [f"{label(r)} @ {r.budget / 1e9:g} GB: " + ", ".join(f"{k}={_fmt(v)}" for k, v in e.items())
              for r, e in shown if e]
    lines.extend(extras)
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)
