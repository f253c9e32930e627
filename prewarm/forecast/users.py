"""Per-user preference features: who is active when, and which models they reach for.

Each user sticks to a few models, and users keep their own hours. So a model's
demand in a window is well described by the sum over users of (how active that
user is at this hour of the week) x (that user's share of requests going to the
model). Shares are recency-weighted so a user who switched models last week is
not credited to the old one. Users never seen before (and anonymous requests)
are given the population's shares, so new users add demand in proportion to
overall popularity instead of breaking anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from prewarm.forecast.seasonal import DAY_S, WEEK_S

HOURS_PER_WEEK = 168


def hour_of_week(ts: np.ndarray) -> np.ndarray:
    how = (np.floor(np.mod(np.asarray(ts, dtype=float), WEEK_S) / 3600.0)).astype(np.int64) % HOURS_PER_WEEK
    return np.asarray(how, dtype=np.int64)


@dataclass
class UserFeatures:
    users: pd.Index
    prefs: sparse.csr_matrix  # (U, M) recency-weighted share of each user's requests per model
    global_share: np.ndarray  # (M,) the same share over everyone: the prior for unknown users
    expected: np.ndarray  # (M, 168) sum over users of activity (requests per window) x preference

    def expected_at(self, window_idx: np.ndarray, window_s: float, rows: np.ndarray | None = None) -> np.ndarray:
        how = hour_of_week((np.asarray(window_idx, dtype=float) + 0.5) * window_s)
        table = self.expected if rows is None else self.expected[rows]
        return table[:, how]

    def weighted_counts(self, user_values: pd.Series | np.ndarray) -> np.ndarray:
        """(M,) sum over these requests of their user's preference vector (unknown users: the global share)."""
        codes, names = pd.factorize(user_values)  # per distinct user, not per request: predict() runs every window
        per_name = np.bincount(codes[codes >= 0], minlength=len(names)).astype(float)
        rows = self.users.get_indexer(pd.Index(names, dtype=object))
        known = rows >= 0
        per_user = np.bincount(rows[known], weights=per_name[known], minlength=len(self.users))
        unknown = len(codes) - float(per_name[known].sum())
        return np.asarray(self.prefs.T @ per_user).ravel() + unknown * self.global_share

    def weighted_series(self, events: pd.DataFrame, first: int, n: int, window_s: float) -> np.ndarray:
        """(M, n) preference-weighted request counts per window for windows first..first+n-1."""
        M = len(self.global_share)
        if n <= 0 or len(events) == 0:
            return np.zeros((M, max(n, 0)))
        w = np.floor(events["ts"].to_numpy(dtype=float) / window_s).astype(np.int64) - first
        inside = (w >= 0) & (w < n)
        w = w[inside]
        codes = self.users.get_indexer(pd.Index(events["user"].to_numpy()[inside], dtype=object))
        known = codes >= 0
        B = sparse.csr_matrix((np.ones(int(known.sum())), (w[known], codes[known])), shape=(n, len(self.users)))
        out = (B @ self.prefs).toarray()
        unknown = np.bincount(w[~known], minlength=n).astype(float)
        return np.asarray((out + unknown[:, None] * self.global_share[None, :]).T, dtype=float)


def build_user_features(events: pd.DataFrame, models: list[str], end_ts: float, window_s: float,
                        half_life_days: float = 7.0) -> UserFeatures:
    """Preferences and hour-of-week activity from ``events`` (all before ``end_ts``), for the given model order."""
    M = len(models)
    if len(events) == 0:
        return UserFeatures(pd.Index([], dtype=object), sparse.csr_matrix((0, M)), np.zeros(M),
                            np.zeros((M, HOURS_PER_WEEK)))
    ts = events["ts"].to_numpy(dtype=float)
    m_codes = pd.Index(models).get_indexer(pd.Index(events["model"]))
    weight = 0.5 ** ((end_ts - ts) / (half_life_days * DAY_S))
    has_model = m_codes >= 0
    global_w = np.bincount(m_codes[has_model], weights=weight[has_model], minlength=M)
    global_share = global_w / global_w.sum() if global_w.sum() > 0 else np.zeros(M)

    user_col = events["user"]
    named = user_col.notna().to_numpy() & has_model
    u_codes, users = pd.factorize(user_col[named])
    U = len(users)
    if U == 0:
        return UserFeatures(pd.Index([], dtype=object), sparse.csr_matrix((0, M)), global_share,
                            np.zeros((M, HOURS_PER_WEEK)))
    W = sparse.csr_matrix((weight[named], (u_codes, m_codes[named])), shape=(U, M))
    row_sum = np.asarray(W.sum(axis=1)).ravel()
    prefs = sparse.csr_matrix(sparse.diags(1.0 / np.maximum(row_sum, 1e-12)) @ W)

    # activity: requests per window at each hour of the week, blended with the hour-of-day
    # profile while there are few weeks of data (two samples per hour-of-week are noisy)
    start = float(ts[0])
    hours = np.arange(np.floor(start / 3600.0), np.ceil(end_ts / 3600.0)) * 3600.0
    cover_how = np.bincount(hour_of_week(hours), minlength=HOURS_PER_WEEK).astype(float)
    cover_hod = cover_how.reshape(7, 24).sum(axis=0)
    how = hour_of_week(ts[named])
    counts_how = sparse.csr_matrix((np.ones(len(how)), (u_codes, how)), shape=(U, HOURS_PER_WEEK)).toarray()
    per_window = window_s / 3600.0
    act_how = counts_how / np.maximum(cover_how, 1.0) * per_window
    act_hod = counts_how.reshape(U, 7, 24).sum(axis=1) / np.maximum(cover_hod, 1.0) * per_window
    weeks = (end_ts - start) / WEEK_S
    alpha = min(1.0, weeks / 4.0)
    activity = alpha * act_how + (1 - alpha) * np.tile(act_hod, (1, 7))
    expected = np.asarray(prefs.T @ activity)
    return UserFeatures(pd.Index(users, dtype=object), prefs, global_share, expected)
