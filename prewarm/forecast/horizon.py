"""From the forecaster's frame to what the planner reads per model: P(any request) over the plan and when.

Both the live prewarmer and the replay's forecast policy call this, so the two
read forecasts the same way; it lives with the forecaster (not the prewarmer) so
the replay needs nothing of the service to use it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

# The plan is redone every window, so it only has to cover until the next plan and the
# loads it starts: the window now running and the next one.
PLAN_WINDOWS = 2
# A model's first request is expected in the first window where p_any reaches this.
DEMAND_P = 0.5

def canonical_views(views: dict[str, tuple[float, float | None]],
                    canonical: Callable[[str], str]) -> dict[str, tuple[float, float | None]]:
    """horizon_views under canonical names: names that are one model ("llama3", "llama3:latest" in an old log)
    combine as independent chances, P = 1 - prod(1 - p), and the earliest expected first request, instead of
    the last one read overwriting the others."""
    out: dict[str, tuple[float, float | None]] = {}
    for name, (p, first) in views.items():
        key = canonical(name)
        if key not in out:
            out[key] = (p, first)
            continue
        q, other = out[key]
        soonest = first if other is None else other if first is None else min(first, other)
        out[key] = (1.0 - (1.0 - q) * (1.0 - p), soonest)
    return out


def horizon_views(forecasts: pd.DataFrame, now: float) -> dict[str, tuple[float, float | None]]:
    """model -> (P(any request over the plan horizon), seconds until its likely first request).

    Windows are treated as independent: P(any) = 1 - prod(1 - p_any) over the
    PLAN_WINDOWS windows that have not ended yet. Vectorised (one sort, no
    per-model pandas work): the replay calls it every window for hundreds of models.
    """
    if forecasts is None or forecasts.empty:
        return {}
    bounds = {col: _seconds(forecasts[col]) for col in ("window_start", "window_end")}
    live = bounds["window_end"] > now
    codes, names = pd.factorize(forecasts["model"].to_numpy(dtype=object)[live])
    if len(names) == 0:
        return {}
    starts = bounds["window_start"][live]
    probs = np.clip(np.nan_to_num(forecasts["p_any"].to_numpy(dtype=float)[live], nan=0.0), 0.0, 1.0)
    order = np.lexsort((starts, codes))
    codes, starts, probs = codes[order], starts[order], probs[order]
    rank = np.arange(len(codes)) - np.searchsorted(codes, codes, side="left")  # window's place within its model
    log_q = np.where(rank < PLAN_WINDOWS, np.log1p(-np.minimum(probs, 1.0 - 1e-15)), 0.0)
    p_any = np.clip(-np.expm1(np.bincount(codes, weights=log_q, minlength=len(names))), 0.0, 1.0)
    hit = np.flatnonzero(probs >= DEMAND_P)
    hit_models, first = np.unique(codes[hit], return_index=True)  # rows are sorted: the first hit is the earliest
    demand = dict(zip(hit_models.tolist(), np.maximum(starts[hit[first]] - now, 0.0).tolist(), strict=False))
    return {str(name): (float(p_any[k]), demand.get(k)) for k, name in enumerate(names)}


def horizon_rates(forecasts: pd.DataFrame, now: float) -> dict[str, float]:
    """model -> expected requests per second over the forecast horizon from ``now``: the planner's rate.

    The windows not yet ended, each counted for the part of it still ahead
    (requests spread evenly within a window), over the time they cover.
    """
    if forecasts is None or forecasts.empty:
        return {}
    start = _seconds(forecasts["window_start"])
    end = _seconds(forecasts["window_end"])
    live = end > now
    if not live.any():
        return {}
    codes, names = pd.factorize(forecasts["model"].to_numpy(dtype=object)[live])
    start, end = start[live], end[live]
    ahead = end - np.maximum(start, now)
    length = np.maximum(end - start, 1e-9)
    mu = np.nan_to_num(forecasts["expected_requests"].to_numpy(dtype=float)[live], nan=0.0).clip(min=0.0)
    requests = np.bincount(codes, weights=mu * ahead / length, minlength=len(names))
    seconds = np.bincount(codes, weights=ahead, minlength=len(names))
    rate = requests / np.maximum(seconds, 1e-9)
    return {str(name): float(rate[k]) for k, name in enumerate(names)}


def _seconds(s: pd.Series) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(s):
        s = pd.to_datetime(s, utc=True).map(lambda t: t.timestamp())
    return s.to_numpy(dtype=float)
