"""`prewarm plan [--apply]`: the plan for the latest forecasts, as a table; --apply carries it out.

Without --apply nothing changes anywhere: it reads the log (through the service
when one holds the database) and asks the upstream what is resident. With
--apply it drives a Prewarmer of its own, which only one process may do, so it
refuses while `prewarm serve` runs on the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

import pandas as pd

from prewarm.backends.registry import make_backend
from prewarm.catalog import load_catalog
from prewarm.commands.sql import format_table
from prewarm.config import Settings, load_settings
from prewarm.errors import BackendError, CommandError, ReadError
from prewarm.planner import PlanningState, plan
from prewarm.prewarmer.core import Prewarmer
from prewarm.store import queries
from prewarm.store.discovery import pid_alive, read_service_file
from prewarm.store.reader import read_query
from prewarm.store.writer import Store


def run_plan(args: argparse.Namespace) -> int:
    settings = load_settings(
        args.config,
        {"db": args.db, "upstream": args.upstream, "vram_budget": args.vram_budget, "catalog": args.catalog},
    )
    return asyncio.run(_plan(settings, args.apply))


async def _plan(settings: Settings, apply: bool) -> int:
    try:
        columns, rows = read_query(settings, queries.LATEST_FORECAST)
        # with --apply the store is opened and start() reads the log itself
        recent = [] if apply else read_query(settings, queries.recent_requests_sql(
            time.time(), PlanningState().half_life_s))[1]
    except ReadError as exc:
        raise CommandError(str(exc)) from None
    forecasts = pd.DataFrame(rows, columns=columns)
    if forecasts.empty:
        raise CommandError(f"no forecasts in {settings.db}: run `prewarm train` and `prewarm forecast` first")
    made_at = float(forecasts["made_at"].max())
    store = None
    if apply:
        service = read_service_file(settings.db)
        if service is not None and pid_alive(service.pid):
            raise CommandError(
                f"prewarm serve (pid {service.pid}) runs on {settings.db} and applies plans itself every window; "
                "use its POST /prewarm/load and /prewarm/unload, or stop it first"
            )
        store = Store(settings.db, settings)
        await asyncio.to_thread(store.open)
    catalog = load_catalog(settings.catalog)
    pw = Prewarmer(settings, make_backend(settings, catalog), store, catalog=catalog)
    try:
        try:
            await pw.start(start_tracker=False)
        except BackendError as exc:
            raise CommandError(str(exc)) from None
        if store is None:
            pw.seed_recent((str(m), float(t)) for m, t in recent)
        if apply:
            actions = await pw.apply_plan(forecasts, made_at)
        else:
            now = pw.clock()
            pw.set_forecast(forecasts, now)
            actions = plan(pw.state, pw.resident_candidates(), pw.absent_candidates(), pw.budget_bytes(), now)
    finally:
        await pw.stop(stop_tracker=False)
        if store is not None:
            await store.close()
    assert pw.budget is not None
    print(f"budget {pw.budget.bytes / 1e9:.2f} GB ({pw.budget.source}: {pw.budget.detail}); "
          f"vram_cost {pw.state.vram_cost:g} s per GB-hour; "
          f"forecast made {datetime.fromtimestamp(made_at, UTC).isoformat(timespec='seconds')}")
    table_rows = [[a.action, a.model, f"{a.resident_bytes_after / 1e9:.2f}", a.reason] for a in actions]
    print(format_table(["action", "model", "resident_gb_after", "reason"], table_rows), end="")
    if apply:
        failed = [r for r in pw.actuator.last_actions if not r["ok"]]
        for r in failed:
            print(f"failed: {r['action']} {r['model']}: {r['error']}")
        return 1 if failed else 0
    return 0
