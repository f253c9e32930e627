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


def _slices(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A stable order grouping ``codes`` (0..n-1) and each code's slice bounds into it (``bounds[c]:bounds[c + 1]``)."""
    order = np.argsort(codes, kind="stable")
    return order, np.searchsorted(codes[order], np.arange(n + 1))


@dataclass
class ModelTimes:
    """Every model's request times, sorted, grouped once: a fit reads its idle times and ages from one grouping."""

    ts: np.ndarray  # request times sorted by (model row, time)
    bounds: np.ndarray  # (M + 1,): model row m's times are ts[bounds[m]:bounds[m + 1]]

    @classmethod
    def of(cls, events: pd.DataFrame, models: list[str]) -> ModelTimes:
        codes = pd.Index(models, dtype=object).get_indexer(pd.Index(events["model"], dtype=object))
        ts = events["ts"].to_numpy(dtype=float)
        keep = codes >= 0
        order, bounds = _slices(codes[keep], len(models))  # stable: each model's times stay sorted
        return cls(ts[keep][order], bounds)

    def _times(self, m: int, before: float) -> np.ndarray:
        t = self.ts[self.bounds[m]:self.bounds[m + 1]]
        return t[:np.searchsorted(t, before, side="left")]

    def idle_times(self, before: float = np.inf) -> IdleTimes:
        """The idle-time distribution of the requests strictly before ``before``."""
        M = len(self.bounds) - 1
        q = np.zeros((M, len(LEVELS)))
        n = np.zeros(M)
        last = np.full(M, -np.inf)
        for m in range(M):
            t = self._times(m, before)
            if len(t):
                last[m] = t[-1]
            if len(t) > 1:
                q[m] = np.quantile(np.diff(t), LEVELS)
                n[m] = len(t) - 1
        return IdleTimes(q, n, last)

    def ages_at(self, issue: np.ndarray) -> np.ndarray:
        """(M, N) seconds since each model's last request strictly before ``issue[m, j]``; NaN where there is none."""
        issue = np.asarray(issue, dtype=float)
        out = np.full(issue.shape, np.nan)
        for m in range(len(self.bounds) - 1):
            t = self.ts[self.bounds[m]:self.bounds[m + 1]]
            if not len(t):
                continue
            k = np.searchsorted(t, issue[m], side="left") - 1
            ok = k >= 0
            out[m, ok] = issue[m, ok] - t[k[ok]]
        return out


@dataclass
class IdleTimes:
    """Per model row: percentiles of the gaps between its consecutive requests, how many gaps, its last request."""

    quantiles: np.ndarray  # (M, len(LEVELS)) seconds
    counts: np.ndarray  # (M,) gaps observed
    last: np.ndarray  # (M,) time of the last request seen; -inf for none

    def next_within(self, rows: np.ndarray, age: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """P(the next request of ``rows[i]`` comes ``start[i]``..``end[i]`` seconds from now | idle ``age[i]`` s).

        (S(age + start) - S(age + end)) / S(age), S(x) the share of gaps longer than x with the open gap counted
        as one longer than all: (n (1 - F(x)) + 1) / (n + 1). 0 where the model has never been seen (``age``
        NaN) or never paused (no gap to learn from).
        """
        rows = np.asarray(rows, dtype=np.int64)
        age = np.asarray(age, dtype=float)
        seen = np.isfinite(age) & (self.counts[rows] > 0)
        out = np.zeros(len(rows))
        if not seen.any():
            return out
        r, a = rows[seen], age[seen]
        x = np.stack([a, a + np.asarray(start, dtype=float)[seen], a + np.asarray(end, dtype=float)[seen]])
        F = np.zeros_like(x)
        order, bounds = _slices(r, len(self.counts))
        for m in np.unique(r):
            idx = order[bounds[m]:bounds[m + 1]]
            F[:, idx] = np.interp(x[:, idx], self.quantiles[m], LEVELS)
        n = self.counts[r]
        S = (n * (1.0 - F) + 1.0) / (n + 1.0)
        out[seen] = np.clip((S[1] - S[2]) / S[0], 0.0, 1.0)
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
