"""From the forecaster's frame to what the planner reads per model: its expected request rate.

Both the live prewarmer and the replay's forecast policy call this, so the two
read forecasts the same way; it lives with the forecaster (not the prewarmer) so
the replay needs nothing of the service to use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd


def canonical_rates(rates: Mapping[str, float], canonical: Callable[[str], str]) -> dict[str, float]:
    """horizon_rates under canonical names: names that are one model ("llama3", "llama3:latest" in an old log)
    are one model's demand, so their rates add up instead of the last one read overwriting the others."""
    out: dict[str, float] = {}
    for name, rate in rates.items():
        key = canonical(name)
        out[key] = out.get(key, 0.0) + rate
    return out


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


def horizon_span(forecasts: pd.DataFrame, now: float) -> float:
    """Seconds from ``now`` to the end of the last window the forecasts cover (0 when none is ahead)."""
    if forecasts is None or forecasts.empty:
        return 0.0
    return max(0.0, float(_seconds(forecasts["window_end"]).max()) - now)
