"""Each model's idle times as a renewal process: how likely its next request is to land in a window, given
how long the model has been idle now.

Why: the lag counts say how busy a model was over the last hour, not where it
stands in its own rhythm. A timer function called every ten minutes and idle
for nine will almost surely be called within the next window; a model whose
burst ended twenty minutes ago, after bursts that never paused that long, will
likely not be. The counts read the same for both. Shahrad et al. (USENIX ATC
2020) built the histogram policy on the same per-model idle-time distribution;
here it is one more input the combiner learns to trust, or not, per lead time.

The distribution is kept as percentiles (the resolution the histogram policy
reads its own distribution at), so an artifact stays small on long traces.
The current, unfinished idle time counts as one more observation longer than
any seen: a model idle past everything it ever did is not certain to stay idle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

LEVELS = np.linspace(0.0, 1.0, 101)


def _grouped(events: pd.DataFrame, models: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Event times sorted by (model row, ts), and each row's slice bounds [starts, ends) into them."""
    codes = pd.Index(models, dtype=object).get_indexer(pd.Index(events["model"], dtype=object))
    ts = events["ts"].to_numpy(dtype=float)
    keep = codes >= 0
    codes, ts = codes[keep], ts[keep]
    order = np.argsort(codes, kind="stable")  # the frame is sorted by ts, so each model's times stay sorted
    bounds = np.searchsorted(codes[order], np.arange(len(models) + 1))
    return ts[order], bounds[:-1], bounds[1:]


@dataclass
class IdleTimes:
    """Per model row: percentiles of the gaps between its consecutive requests, how many gaps, its last request."""

    quantiles: np.ndarray  # (M, len(LEVELS)) seconds
    counts: np.ndarray  # (M,) gaps observed
    last: np.ndarray  # (M,) time of the last request seen; -inf for none

    @classmethod
    def from_events(cls, events: pd.DataFrame, models: list[str]) -> IdleTimes:
        ts, starts, ends = _grouped(events, models)
        M = len(models)
        q = np.zeros((M, len(LEVELS)))
        n = np.maximum(ends - starts - 1, 0)
        last = np.full(M, -np.inf)
        for m in range(M):
            t = ts[starts[m]:ends[m]]
            if len(t):
                last[m] = t[-1]
            if len(t) > 1:
                q[m] = np.quantile(np.diff(t), LEVELS)
        return cls(q, n.astype(float), last)

    def survival(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        """P(a gap of model ``rows[i]`` exceeds ``x[i]`` seconds), counting the open gap as one longer than all."""
        x = np.asarray(x, dtype=float)
        F = np.zeros(len(x))
        order = np.argsort(rows, kind="stable")
        bounds = np.searchsorted(rows[order], np.arange(len(self.counts) + 1))
        for m in np.unique(rows):
            idx = order[bounds[m]:bounds[m + 1]]
            if self.counts[m] > 0:
                F[idx] = np.interp(x[idx], self.quantiles[m], LEVELS)
        n = self.counts[rows]
        return np.asarray((n * (1.0 - F) + 1.0) / (n + 1.0), dtype=float)

    def next_within(self, rows: np.ndarray, age: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """P(the next request of ``rows[i]`` comes ``start[i]``..``end[i]`` seconds from now | idle ``age[i]`` s).

        0 where the model has never been seen (``age`` NaN) or never paused (no gap to learn from).
        """
        rows = np.asarray(rows, dtype=np.int64)
        age = np.asarray(age, dtype=float)
        seen = np.isfinite(age) & (self.counts[rows] > 0)
        out = np.zeros(len(rows))
        if not seen.any():
            return out
        r, a = rows[seen], age[seen]
        here = self.survival(r, a)
        lo = self.survival(r, a + np.asarray(start, dtype=float)[seen])
        hi = self.survival(r, a + np.asarray(end, dtype=float)[seen])
        out[seen] = np.clip((lo - hi) / here, 0.0, 1.0)
        return out


def ages_at(events: pd.DataFrame, models: list[str], issue: np.ndarray) -> np.ndarray:
    """(M, N) seconds since each model's last request strictly before ``issue[m, j]``; NaN where there is none."""
    ts, starts, ends = _grouped(events, models)
    issue = np.asarray(issue, dtype=float)
    out = np.full(issue.shape, np.nan)
    for m in range(len(models)):
        t = ts[starts[m]:ends[m]]
        if not len(t):
            continue
        k = np.searchsorted(t, issue[m], side="left") - 1
        ok = k >= 0
        out[m, ok] = issue[m, ok] - t[k[ok]]
    return out


def last_requests(events: pd.DataFrame, models: list[str]) -> np.ndarray:
    """(M,) time of each model's last request in ``events`` (sorted by ts); -inf for none."""
    out = np.full(len(models), -np.inf)
    if not len(events):
        return out
    tail = events.drop_duplicates("model", keep="last")
    rows = pd.Index(models, dtype=object).get_indexer(pd.Index(tail["model"], dtype=object))
    ok = rows >= 0
    out[rows[ok]] = tail["ts"].to_numpy(dtype=float)[ok]
    return out
