"""`prewarm sql` and `prewarm status`: the request log for people and scripts."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from typing import Any

from prewarm.config import load_settings
from prewarm.errors import CommandError
from prewarm.store.reader import ReadError, ServiceReader, open_reader, read_query
from prewarm.store.readonly import ReadOnlyError
from prewarm.store.writer import spill_path


def run_sql(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, {"db": args.db})
    try:
        columns, rows = read_query(settings, args.query, allow_files=args.allow_files)
    except (ReadOnlyError, ReadError) as exc:
        raise CommandError(str(exc)) from None
    sys.stdout.write(format_rows(columns, rows, args.format))
    return 0


def format_rows(columns: list[str], rows: list[list[Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([dict(zip(columns, row, strict=False)) for row in rows]) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        w.writerows([["" if v is None else _cell(v) for v in row] for row in rows])
        return buf.getvalue()
    if fmt == "table":
        return format_table(columns, rows)
    raise CommandError(f"unknown format {fmt!r}: table, csv or json")


def format_table(columns: list[str], rows: list[list[Any]]) -> str:
    cells = [["NULL" if v is None else _cell(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=False)]
    numeric = [all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows if r[i] is not None)
               for i in range(len(columns))]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=False)]
        return "  ".join(parts).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) < 1e15 else repr(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v).replace("\n", " ")


STATUS_QUERIES = {
    "Requests per model (last 24 h and all time)": """
        SELECT model,
               count(*) FILTER (WHERE ts_start >= now() - INTERVAL 24 HOUR) AS requests_24h,
               count(*) FILTER (WHERE cold AND ts_start >= now() - INTERVAL 24 HOUR) AS cold_24h,
               count(*) AS requests,
               count(*) FILTER (WHERE cold) AS cold_starts,
               count(*) FILTER (WHERE status >= 400) AS errors,
               round(median(ttft_ms), 1) AS p50_ttft_ms,
               max(ts_start) AS last_request
        FROM requests WHERE model IS NOT NULL
        GROUP BY model ORDER BY requests DESC, model LIMIT 30""",
    "Totals": """
        SELECT count(*) AS requests,
               count(*) FILTER (WHERE model IS NULL) AS without_model,
               count(DISTINCT user_id) AS users,
               min(ts_start) AS first, max(ts_start) AS last
        FROM requests""",
    "Latest training run": """
        SELECT run_id, started_at, finished_at, n_models, artifact_path
        FROM training_runs ORDER BY started_at DESC LIMIT 1""",
    "Latest forecast": """
        SELECT max(made_at) AS made_at, count(DISTINCT model) AS models, max(window_end) AS until
        FROM forecasts""",
    "Recent prewarm actions": """
        SELECT ts, model, action, ok, round(duration_ms) AS ms, reason
        FROM prewarm_actions ORDER BY ts DESC LIMIT 10""",
}


def run_status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, {"db": args.db})
    try:
        reader = open_reader(settings)
    except ReadError as exc:
        raise CommandError(str(exc)) from None
    out: list[str] = [f"database: {settings.db} (read through the {reader.via})"]
    try:
        if isinstance(reader, ServiceReader):
            store = reader.health().get("store", {})
            out.append(
                "writer: {written} written, {spilled} spilled, {dropped} dropped, {queued} queued".format(
                    **{k: store.get(k, "?") for k in ("written", "spilled", "dropped", "queued")}
                )
            )
        else:
            out.append("service: not running")
        spill = spill_path(settings.db)
        if spill.exists():
            out.append(f"spilled rows waiting to be loaded on the next start: {spill}")
        for title, sql in STATUS_QUERIES.items():
            columns, rows = reader.query(sql)
            out.append("")
            out.append(title)
            out.append(format_table(columns, rows).rstrip("\n"))
    except ReadError as exc:
        raise CommandError(str(exc)) from None
    finally:
        reader.close()
    sys.stdout.write("\n".join(out) + "\n")
    return 0
