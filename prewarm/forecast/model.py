"""The heat forecaster: seasonal ARIMA + user preference features + recent lags, combined by gradient boosting.

Why a combiner: the seasonal model knows the daily/weekly shape but reacts to
nothing after its fit; recent lags know what is happening now; the user
features know which models the currently active users reach for. A Poisson
gradient-boosted regressor (HistGradientBoostingRegressor) learns how much to
trust each, per horizon step, from the last days before the fit.

``p_any`` (probability of at least one request) comes from a negative binomial
with the predicted mean and one dispersion fitted at training time: demand is
burstier than Poisson, and a Poisson p_any would over-promise for rarely used
models. ``lower``/``upper`` are that distribution's 5% and 95% quantiles.

fit() does the expensive work (the ARMA path until the next refit, user tables);
predict() only counts a few hours of events and runs the regressor once, so the
replay simulator can call it every window.
"""

from __future__ import annotations

import json
import pickle
import platform
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

from prewarm.forecast.idle import IdleTimes, ModelTimes, last_requests
from prewarm.forecast.seasonal import DAY_S, SeasonalConfig, SeasonalFit, fit_seasonal
from prewarm.forecast.series import before, between, check_events, count_matrix
from prewarm.forecast.threads import one_thread
from prewarm.forecast.users import UserFeatures, build_user_features

FEATURES = ("seasonal", "naive_day", "lag1", "lag3", "lag12", "user_recent", "user_expected",
            "idle_next", "base_rate", "hour", "dow", "step")
ABLATION_FEATURES = ("seasonal", "user_recent", "user_expected")
# more demand in any input never lowers the forecast: keeps small or unusual inputs (a burst
# bigger than any seen in training) from landing in an arbitrary leaf
INCREASING = {"seasonal", "naive_day", "lag1", "lag3", "lag12", "user_recent", "user_expected", "idle_next"}
DEMAND = ("seasonal", "naive_day", "lag1", "lag3", "lag12", "user_recent", "user_expected")
# Parts a forecaster can be fitted without (ForecastParams.without), for the replay's ablations: "users"
# zeroes both user features; "seasonal" puts the model's level (its base rate) where the seasonal model's
# path would be, so nothing carries a daily or weekly shape from statsmodels. Training and prediction both.
PARTS = ("users", "seasonal")


def without(X: np.ndarray, parts: tuple[str, ...]) -> np.ndarray:
    """The design matrix with ``parts`` taken out (see PARTS); X itself when there are none."""
    if not parts:
        return X
    X = X.copy()
    if "users" in parts:
        X[:, FEATURES.index("user_recent")] = 0.0
        X[:, FEATURES.index("user_expected")] = 0.0
    if "seasonal" in parts:
        X[:, FEATURES.index("seasonal")] = X[:, FEATURES.index("base_rate")]
    return X


def to_rate_space(X: np.ndarray, features: tuple[str, ...] = FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Demand inputs divided by each model's scale (its base rate, at least 1), base rate as log1p.

    Why: the regressor's Poisson Newton steps are unstable when counts span 0.01
    to 800 per window (a leaf stepped to exp(21) on a real trace). As a rate
    relative to the model's own level, with the scale as exposure (sample
    weight), busy and quiet models share one well-conditioned problem.
    """
    scale = np.maximum(X[:, FEATURES.index("base_rate")], 1.0)
    out = X.copy()
    for i, f in enumerate(FEATURES):
        if f in DEMAND:
            out[:, i] = X[:, i] / scale
    out[:, FEATURES.index("base_rate")] = np.log1p(X[:, FEATURES.index("base_rate")])
    cols = [FEATURES.index(f) for f in features]
    return out[:, cols], scale
LAGS = 12  # windows of recent history the lag and recent-user features look at
DISPERSION_GRID = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, np.inf)
ARTIFACT_FILE = "forecaster.pkl"
MANIFEST_FILE = "manifest.json"

Progress = Callable[[str, int, int], None]


@dataclass
class ForecastParams:
    window_s: float = 300.0
    horizon: int = 12  # windows ahead the combiner is trained for (the planner's horizon)
    history_days: float = 28.0  # older events are ignored
    combiner_days: float = 3.0  # the combiner learns from this many recent days
    min_combiner_days: float = 2.0  # with less history before them, the combiner learns from the later half
    path_days: float = 2.0  # ARMA path precomputed this far past the fit (beyond it: seasonal terms only)
    user_half_life_days: float = 7.0
    hgb_max_iter: int = 120
    hgb_learning_rate: float = 0.1
    hgb_max_leaf_nodes: int = 31
    backtest_days: float = 1.0
    seed: int = 0
    seasonal: SeasonalConfig = field(default_factory=SeasonalConfig)
    without: tuple[str, ...] = ()  # parts left out, for ablations (PARTS); () in service

    def __post_init__(self) -> None:
        if isinstance(self.seasonal, dict):
            d = dict(self.seasonal)
            if "arma_order" in d:
                d["arma_order"] = tuple(d["arma_order"])
            self.seasonal = SeasonalConfig(**d)
        if self.window_s <= 0:
            raise ValueError(f"window_s must be positive, got {self.window_s}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        self.without = tuple(self.without)
        bad = [x for x in self.without if x not in PARTS]
        if bad:
            raise ValueError(f"without: unknown part(s) {bad}; choose from {list(PARTS)}")

    @property
    def per_day(self) -> int:
        return int(round(DAY_S / self.window_s))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nb_p_any(mu: np.ndarray, k: float) -> np.ndarray:
    """P(N >= 1) for a negative binomial with mean mu and shape k (k = inf: Poisson)."""
    mu = np.maximum(np.asarray(mu, dtype=float), 0.0)
    if not np.isfinite(k):
        return np.asarray(-np.expm1(-mu), dtype=float)
    return 1.0 - np.power(1.0 + mu / k, -k)


def nb_interval(mu: np.ndarray, k: float, z: float = 1.645) -> tuple[np.ndarray, np.ndarray]:
    """Approximate 5 % / 95 % quantiles: mean -/+ z standard deviations of the negative binomial, in whole requests.

    A normal approximation, because exact quantiles (scipy's nbinom.ppf) cost
    more than the rest of predict() together.
    """
    mu = np.maximum(np.asarray(mu, dtype=float), 0.0)
    var = mu + (mu * mu / k if np.isfinite(k) else 0.0)
    sd = np.sqrt(var)
    return np.maximum(np.floor(mu - z * sd), 0.0), np.ceil(mu + z * sd)


def fit_dispersion(mu: np.ndarray, y: np.ndarray) -> float:
    """The shape k whose p_any has the lowest Brier score on (mu, y): calibrates p_any in one number."""
    hit = (y > 0).astype(float)
    scores = [float(np.mean((nb_p_any(mu, k) - hit) ** 2)) for k in DISPERSION_GRID]
    return float(DISPERSION_GRID[int(np.argmin(scores))])


@dataclass
class _Design:
    models: list[str]
    n_known: int
    first_window: int
    X: np.ndarray  # (M * H, len(FEATURES)), rows model-major
    horizon: int


def _window_sums(cs: np.ndarray, rows: np.ndarray, end: np.ndarray, k: int) -> np.ndarray:
    """Sum of the k windows before ``end`` (relative column index) from a zero-padded cumulative sum."""
    return np.asarray(cs[rows, end] - cs[rows, np.maximum(end - k, 0)], dtype=float)


class HeatForecaster:
    """Per-model, per-window demand forecasts; see the module docstring for the why."""

    def __init__(self, params: ForecastParams, seasonal: SeasonalFit, users: UserFeatures, idle: IdleTimes,
                 combiner: HistGradientBoostingRegressor | None, dispersion: float,
                 fit_report: dict[str, Any], ablation: HistGradientBoostingRegressor | None = None) -> None:
        self.params = params
        self.seasonal = seasonal
        self.users = users
        self.idle = idle
        self.combiner = combiner
        self.ablation = ablation
        self.dispersion = dispersion
        self.fit_report = fit_report
        self.models = list(seasonal.models)
        self._model_index = pd.Index(self.models, dtype=object)
        self.metrics: dict[str, Any] = {}
        self.run_id: str | None = None

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, events: pd.DataFrame, end_ts: float, params: ForecastParams,
            previous: HeatForecaster | None = None, *, executor: Executor | None = None,
            progress: Progress | None = None, ablation: bool = False) -> HeatForecaster:
        """Fit on events with ts < end_ts. ``previous`` warm-starts the ARMA fits (same model, nearby data)."""
        check_events(events)
        w = params.window_s
        per_day = params.per_day
        E = int(np.floor(end_ts / w))
        events = before(events, E * w)
        events = events.iloc[int(np.searchsorted(events["ts"].to_numpy(dtype=float),
                                                  (E - params.history_days * per_day) * w)):]
        if len(events):
            first = int(np.floor(float(events["ts"].iloc[0]) / w))
        else:
            first = E
        cm = count_matrix(events, first, E, w)
        C, models, T = cm.counts, cm.models, cm.n_windows
        warm = previous.seasonal.arma_params if previous is not None else None
        path_len = int(round(params.path_days * per_day)) + params.horizon
        calib = int(round(params.combiner_days * per_day))
        # A short history (a new service, an 8-hour trace) still teaches how far to trust the last windows
        # against the level: the combiner learns from its later half, the seasonal fit has the earlier; under
        # two horizons of targets it could not see every lead time more than once, and it is skipped.
        if T - calib < params.min_combiner_days * per_day:
            calib = T // 2
        use_combiner = calib >= 2 * params.horizon

        def step(stage: str) -> Callable[[int, int], None] | None:
            return (lambda d, t: progress(stage, d, t)) if progress else None

        times = ModelTimes.of(events, models)  # one grouping for both fits' idle times and the training ages
        combiner = ablation_model = None
        dispersion = float("inf")
        report: dict[str, Any] = {}
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = round(now - clock, 3)
            clock = now

        if use_combiner:
            split = E - calib
            fit_a = fit_seasonal(C[:, :T - calib], models, first, w, params.seasonal, calib + params.horizon,
                                 warm, executor, step("seasonal (combiner)"), optimise=False)
            lap("seasonal_combiner_s")
            users_a = build_user_features(before(events, split * w), models, split * w, w,
                                          params.user_half_life_days)
            X, y = _training_rows(C, first, split, E, fit_a, users_a, times, split * w, events, params)
            X = without(X, params.without)
            X[:, np.isnan(X).all(axis=0)] = 0.0  # no "yesterday" yet (under a day of history): nothing to learn
            lap("features_s")
            if y.sum() > 0:  # Poisson loss needs something to count
                if progress:
                    progress("combiner", 0, 1)
                with one_thread():
                    Xr, scale = to_rate_space(X)
                    combiner = _hgb(params).fit(Xr, y / scale, sample_weight=scale)
                    mu = combiner.predict(Xr) * scale
                    if ablation:
                        Xa, _ = to_rate_space(X, ABLATION_FEATURES)
                        ablation_model = _hgb(params, ABLATION_FEATURES).fit(Xa, y / scale, sample_weight=scale)
                dispersion = fit_dispersion(mu, y)
                lap("combiner_s")
                if progress:
                    progress("combiner", 1, 1)
                report["combiner_rows"] = int(len(y))
            else:
                report["combiner"] = "skipped: no requests in the windows it would learn from"
            warm = {**(warm or {}), **fit_a.arma_params}
        else:
            report["combiner"] = f"skipped: under {2 * params.horizon} windows of data to learn from"
        fit_b = fit_seasonal(C, models, first, w, params.seasonal, path_len, warm, executor, step("seasonal"))
        lap("seasonal_s")
        users_b = build_user_features(events, models, E * w, w, params.user_half_life_days)
        lap("users_s")
        idle_b = times.idle_times()
        lap("idle_s")
        methods = dict(zip(models, fit_b.methods, strict=False))
        counts = pd.Series(fit_b.methods).value_counts().to_dict() if models else {}
        report.update({
            "methods": methods,
            "method_counts": {k: int(v) for k, v in counts.items()},
            "n_models": len(models),
            "n_users": len(users_b.users),
            "n_events": int(len(events)),
            "data_start": float(first * w),
            "data_end": float(E * w),
            "warm_started": warm is not None and bool(warm),
            "dispersion": dispersion if np.isfinite(dispersion) else "poisson",
            "timings": timings,
        })
        return cls(params, fit_b, users_b, idle_b, combiner, dispersion, report, ablation_model)

    # ------------------------------------------------------------- predicting
    def _design(self, events: pd.DataFrame, now_ts: float, horizon: int) -> _Design:
        p = self.params
        w, per_day = p.window_s, p.per_day
        n0 = int(np.floor(now_ts / w))
        H = int(horizon)
        recent = between(events, (n0 - LAGS) * w, min(n0 * w, now_ts))
        yday = between(events, (n0 - per_day) * w, min((n0 - per_day + H) * w, now_ts))
        # factorize each slice once (C speed on the Arrow strings), then look up only its few distinct names
        r_codes, r_names = pd.factorize(recent["model"])
        y_codes, y_names = pd.factorize(yday["model"])
        seen = pd.Index(pd.unique(np.concatenate([np.asarray(r_names, dtype=object),
                                                  np.asarray(y_names, dtype=object)])), dtype=object)
        new = [m for m in seen.difference(self._model_index, sort=False) if m is not None]
        models = self.models + [str(m) for m in new]
        index = self._model_index.append(pd.Index(new, dtype=object)) if new else self._model_index
        M, K = len(models), len(self.models)

        def counts(part: pd.DataFrame, codes: np.ndarray, names: Any, start: int, n: int) -> np.ndarray:
            lookup = np.append(index.get_indexer(pd.Index(names, dtype=object)), -1)  # code -1 (missing) -> -1
            rows = lookup[codes]
            rel = np.floor(part["ts"].to_numpy(dtype=float) / w).astype(np.int64) - start
            ok = (rows >= 0) & (rel >= 0) & (rel < n)
            return np.bincount(rows[ok] * n + rel[ok], minlength=M * n).astype(float).reshape(M, n)

        lag = counts(recent, r_codes, r_names, n0 - LAGS, LAGS)
        naive = counts(yday, y_codes, y_names, n0 - per_day, H)
        naive[:, max(0, min(H, per_day)):] = np.nan  # windows whose "yesterday" is still in the future
        targets = np.arange(n0, n0 + H)
        seasonal = np.empty((M, H))
        seasonal[:K] = self.seasonal.at(targets)
        lag12 = lag.mean(axis=1)
        seasonal[K:] = lag12[K:, None]
        user_recent = np.zeros(M)
        user_recent[:K] = self.users.weighted_counts(recent["user"])
        user_expected = np.zeros((M, H))
        user_expected[:K] = self.users.expected_at(targets, w)
        base = np.empty(M)
        base[:K] = np.maximum(self.seasonal.coef[:, 0], 0.0)
        base[K:] = lag12[K:]
        # idle age now: the last request since the fit ended (or since the lag span began, if earlier), else the
        # fit's own last; unknown (NaN) when forecasting inside the fitted span for a model not seen since
        start = min(float(self.fit_report.get("data_end", now_ts)), (n0 - LAGS) * w)
        last = last_requests(between(events, start, now_ts), self.models)
        last = np.where(np.isfinite(last), last, np.where(self.idle.last < start, self.idle.last, np.nan))
        age = now_ts - last
        ahead = (np.arange(H) + n0) * w - now_ts
        idle_next = np.zeros((M, H))
        idle_next[:K] = self.idle.next_within(
            np.repeat(np.arange(K), H), np.repeat(age, H), np.tile(np.maximum(ahead, 0.0), K),
            np.tile(ahead + w, K)).reshape(K, H)
        t_sec = (targets + 0.5) * w
        cols = {
            "seasonal": seasonal,
            "naive_day": naive,
            "lag1": np.repeat(lag[:, -1:], H, axis=1),
            "lag3": np.repeat(lag[:, -3:].mean(axis=1, keepdims=True), H, axis=1),
            "lag12": np.repeat(lag12[:, None], H, axis=1),
            "user_recent": np.repeat(user_recent[:, None], H, axis=1),
            "user_expected": user_expected,
            "idle_next": idle_next,
            "base_rate": np.repeat(base[:, None], H, axis=1),
            "hour": np.broadcast_to(np.mod(t_sec, DAY_S) / 3600.0, (M, H)),
            "dow": np.broadcast_to(np.floor(np.mod(t_sec, 7 * DAY_S) / DAY_S), (M, H)),
            "step": np.broadcast_to(np.arange(H, dtype=float), (M, H)),
        }
        X = np.stack([cols[f].reshape(-1) for f in FEATURES], axis=1)
        return _Design(models, K, n0, without(X, getattr(p, "without", ())), H)

    def _mean(self, X: np.ndarray) -> np.ndarray:
        if self.combiner is None:
            return np.asarray(np.maximum(X[:, FEATURES.index("seasonal")], 0.0), dtype=float)
        Xr, scale = to_rate_space(X)
        with one_thread():
            return np.asarray(self.combiner.predict(Xr) * scale, dtype=float)

    def predict(self, events: pd.DataFrame, now_ts: float, horizon: int) -> pd.DataFrame:
        """One row per model per window, starting with the window containing now_ts; only events before now_ts count."""
        d = self._design(events, now_ts, horizon)
        mu = self._mean(d.X)
        return self._frame(d, mu)

    def predict_variants(self, events: pd.DataFrame, now_ts: float, horizon: int
                         ) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
        """Means per variant for the backtest: combined, the ablations and the baselines, on one design."""
        d = self._design(events, now_ts, horizon)
        X = d.X
        f = FEATURES.index
        out = {
            "combined": self._mean(X),
            "arima": np.maximum(X[:, f("seasonal")], 0.0),
            "seasonal_naive": np.nan_to_num(X[:, f("naive_day")], nan=0.0),
            "moving_average": X[:, f("lag12")],
        }
        if self.ablation is not None:
            Xa, scale = to_rate_space(X, ABLATION_FEATURES)
            with one_thread():
                out["arima_user"] = self.ablation.predict(Xa) * scale
        windows = np.arange(d.first_window, d.first_window + d.horizon)
        return d.models, windows, out

    def _frame(self, d: _Design, mu: np.ndarray) -> pd.DataFrame:
        w = self.params.window_s
        starts = (np.arange(d.first_window, d.first_window + d.horizon) * w).astype(float)
        lower, upper = nb_interval(mu, self.dispersion)
        M = len(d.models)
        return pd.DataFrame({
            "model": np.repeat(np.asarray(d.models, dtype=object), d.horizon),
            "window_start": np.tile(starts, M),
            "window_end": np.tile(starts + w, M),
            "expected_requests": mu,
            "p_any": nb_p_any(mu, self.dispersion),
            "lower": lower,
            "upper": upper,
        })

    # ---------------------------------------------------------- persistence
    def manifest(self) -> dict[str, Any]:
        import sklearn
        import statsmodels

        return {
            "format": 2,
            "params": self.params.to_dict(),
            "data_range": {"start": self.fit_report.get("data_start"), "end": self.fit_report.get("data_end")},
            "versions": {"python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
                         "statsmodels": statsmodels.__version__, "scikit-learn": sklearn.__version__},
            "fit_report": self.fit_report,
            "metrics": self.metrics,
        }

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """Write the artifact folder: the pickled forecaster and a human-readable manifest.

        Pickle is how scikit-learn models are persisted; load only artifacts this
        project wrote (the folder is the service's own).
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (ARTIFACT_FILE + ".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(self, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path / ARTIFACT_FILE)
        manifest = {"run_id": self.run_id, **self.manifest(), **(extra or {})}
        (path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")

    @classmethod
    def load(cls, path: Path) -> HeatForecaster:
        path = Path(path)
        file = path / ARTIFACT_FILE if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no forecaster artifact at {file}")
        with file.open("rb") as fh:
            obj = pickle.load(fh)
        if not isinstance(obj, cls):
            raise ValueError(f"{file} does not hold a HeatForecaster")
        if getattr(obj, "idle", None) is None:
            raise ValueError(f"{file} was written by an older prewarm (format 1, no idle times); retrain")
        return obj


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _hgb(params: ForecastParams, features: tuple[str, ...] = FEATURES) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(
        monotonic_cst=[1 if f in INCREASING else 0 for f in features],
        loss="poisson", max_iter=params.hgb_max_iter, learning_rate=params.hgb_learning_rate,
        max_leaf_nodes=params.hgb_max_leaf_nodes, l2_regularization=1.0, early_stopping=True,
        validation_fraction=0.15,
        n_iter_no_change=15, random_state=params.seed)


def _training_rows(C: np.ndarray, first: int, split: int, E: int, fit_a: SeasonalFit, users_a: UserFeatures,
                   times: ModelTimes, split_ts: float, events: pd.DataFrame, params: ForecastParams
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Combiner rows for target windows split..E-1, each issued a random 0..horizon-1 windows earlier.

    Every feature is computed exactly as predict() would have seen it at the issue
    time (the seasonal path from a fit that ended at ``split``), so the combiner
    learns how far to trust each input at each horizon.
    """
    w, per_day = params.window_s, params.per_day
    M, T = C.shape
    rng = np.random.default_rng(params.seed)
    targets = np.arange(split, E)
    Tc = len(targets)
    h = rng.integers(0, params.horizon, size=(M, Tc))
    t_rel = targets[None, :] - first  # (1, Tc) column index of the target
    issue_rel = t_rel - h  # (M, Tc)
    rows = np.repeat(np.arange(M)[:, None], Tc, axis=1)
    cs = np.concatenate([np.zeros((M, 1)), np.cumsum(C, axis=1)], axis=1)
    end = np.maximum(issue_rel, 0)
    lag1 = _window_sums(cs, rows, end, 1)
    lag3 = _window_sums(cs, rows, end, 3) / 3
    lag12 = _window_sums(cs, rows, end, LAGS) / LAGS
    naive_rel = t_rel - per_day
    naive = np.where(naive_rel >= 0, C[rows, np.clip(np.broadcast_to(naive_rel, (M, Tc)), 0, T - 1)], np.nan)
    U = users_a.weighted_series(events, first, T, w)
    ucs = np.concatenate([np.zeros((M, 1)), np.cumsum(U, axis=1)], axis=1)
    user_recent = _window_sums(ucs, rows, end, LAGS)
    seasonal = fit_a.at(targets)
    user_expected = users_a.expected_at(targets, w)
    base = np.broadcast_to(np.maximum(fit_a.coef[:, :1], 0.0), (M, Tc))
    # issued at the start of its window, the target h windows ahead; gaps from before the split, ages from all
    age = times.ages_at((first + issue_rel) * w)
    idle_next = times.idle_times(split_ts).next_within(rows.reshape(-1), age.reshape(-1), (h * w).reshape(-1),
                                   ((h + 1) * w).reshape(-1)).reshape(M, Tc)
    t_sec = (targets + 0.5) * w
    cols = {
        "seasonal": seasonal, "naive_day": naive, "lag1": lag1, "lag3": lag3, "lag12": lag12,
        "user_recent": user_recent, "user_expected": user_expected, "idle_next": idle_next, "base_rate": base,
        "hour": np.broadcast_to(np.mod(t_sec, DAY_S) / 3600.0, (M, Tc)),
        "dow": np.broadcast_to(np.floor(np.mod(t_sec, 7 * DAY_S) / DAY_S), (M, Tc)),
        "step": h.astype(float),
    }
    X = np.stack([np.asarray(cols[f], dtype=float).reshape(-1) for f in FEATURES], axis=1)
    y = C[:, split - first:].reshape(-1)
    # models not yet seen by the issue time teach nothing about known ones
    seen = cs[rows, end] > 0
    keep = seen.reshape(-1)
    return X[keep], y[keep]
