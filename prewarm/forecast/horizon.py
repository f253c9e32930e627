"""From the forecaster's frame to what the planner reads: per model, its expected requests over time ahead.

Both the live prewarmer and the replay's forecast policy call this, so the two
read forecasts the same way; it lives with the forecaster (not the prewarmer) so
the replay needs nothing of the service to use it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from prewarm.planner import Outlook


def horizon_outlook(forecasts: pd.DataFrame, now: float) -> Outlook | None:
    """The windows not yet ended as the planner's ``Outlook`` from ``now`` (None when none is ahead).

    Requests are spread evenly within a window, and the running window counts
    only for the part still ahead. The edges are every window's bounds; where
    a model has no row for an interval that others cover, it is forecast to
    see nothing there (its rows said so by their absence).
    """
    if forecasts is None or forecasts.empty:
        return None
    start = _seconds(forecasts["window_start"])
    end = _seconds(forecasts["window_end"])
    live = end > now
    if not live.any():
        return None
    codes, names = pd.factorize(forecasts["model"].to_numpy(dtype=object)[live])
    start, end = start[live], end[live]
    length = np.maximum(end - start, 1e-9)
    start = np.maximum(start, now)
    mu = np.nan_to_num(forecasts["expected_requests"].to_numpy(dtype=float)[live], nan=0.0).clip(min=0.0)
    edges = np.unique(np.concatenate([start, end]))
    k = len(edges) - 1
    if k < 1:
        return None
    # each row adds mu / length to its model's density over the intervals it spans: a difference array
    lo = np.searchsorted(edges, start)
    hi = np.searchsorted(edges, end)
    diff = np.zeros((len(names), k + 1))
    np.add.at(diff, (codes, lo), mu / length)
    np.add.at(diff, (codes, hi), -mu / length)
    density = np.cumsum(diff, axis=1)[:, :k].clip(min=0.0)
    return Outlook(edges, tuple(str(n) for n in names), density)


def canonical_outlook(outlook: Outlook, canonical: Callable[[str], str]) -> Outlook:
    """``outlook`` under canonical names: names that are one model ("llama3", "llama3:latest" in an old log)
    are one model's demand, so their densities add up instead of the last one read overwriting the others."""
    codes, names = pd.factorize(np.asarray([canonical(str(k)) for k in outlook.keys], dtype=object))
    density = np.zeros((len(names), outlook.density.shape[1]))
    np.add.at(density, codes, outlook.density)
    return Outlook(outlook.edges, tuple(str(n) for n in names), density)


def _seconds(s: pd.Series) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(s):
        s = pd.to_datetime(s, utc=True).map(lambda t: t.timestamp())
    return s.to_numpy(dtype=float)
