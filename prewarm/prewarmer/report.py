"""The prewarmer's state as JSON, as a person checks it: /prewarm/status and the status page read this."""

from __future__ import annotations

from typing import Any

from prewarm.prewarmer.core import Prewarmer


def planning_status(pw: Prewarmer, limit: int = 50) -> dict[str, Any]:
    """vram_cost, and per model (resident first, then the absent ones with a rate, highest worth first) its
    rate, where the rate comes from, and its worth."""
    now = pw.clock()
    rows = []
    for c, resident in [(c, True) for c in pw.resident_candidates(holding=False)] + [
            (c, False) for c in (pw.absent_candidates() if pw.budget is not None else [])]:
        rate = pw.state.rate(c.key, now)
        if not resident and rate <= 0:
            continue
        rows.append({"model": c.key, "resident": resident, "requests_per_hour": round(rate * 3600, 4),
                     "rate_from": "forecast" if c.key in pw.state.forecast else "recent requests",
                     "load_seconds": c.load_seconds, "size_bytes": c.size_bytes,
                     "worth": round(pw.state.worth(c, now), 3)})
    rows.sort(key=lambda r: (not r["resident"], -r["worth"], r["model"]))
    return {"vram_cost": pw.state.vram_cost, "half_life_s": pw.state.half_life_s, "models": rows[:limit]}


def status(pw: Prewarmer) -> dict[str, Any]:
    resident = pw.resident()
    return {
        "upstream": pw.backend.base_url,
        "upstream_kind": pw.backend.kind,
        "budget": None if pw.budget is None else {
            "bytes": pw.budget.bytes, "source": pw.budget.source, "detail": pw.budget.detail},
        "resident": [{"model": m, "size_bytes": b, "reserved": pw.reserved(m)} for m, b in sorted(resident.items())],
        "resident_bytes": sum(resident.values()),
        "planning": planning_status(pw),
        "in_flight": pw.in_flight(),
        "pins": sorted(pw.pins),
        "planned_resident": sorted(pw.planned_resident),
        "last_plan_at": pw.last_plan_at,
        "last_plan": [{"model": a.model, "action": a.action, "reason": a.reason,
                       "resident_bytes_after": a.resident_bytes_after} for a in pw.last_plan],
        "last_actions": [dict(r, ts=r["ts"].isoformat()) for r in pw.actuator.last_actions],
    }
