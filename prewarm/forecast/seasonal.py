"""The per-model seasonal model: a two-step seasonal ARIMA, with cheaper fallbacks for sparse models.

Why two steps: a SARIMAX with a seasonal period of 288 (a day of 5-minute
windows) is out of reach (s=96 already took 233 s and 16 GB for one model on the
development machine). Fitting the daily (and, with two weeks of data, weekly)
cycle as Fourier terms by least squares and an ARMA on what is left is the same
model in two cheap steps (dynamic harmonic regression): 0.22 s per model on 14
days of 5-minute counts, 0.08 s when warm-started, and better than same-time-
yesterday on the next day.

Methods, chosen per model by how much data it has (and reported in the fit report):

* ``arima`` — Fourier terms + ARMA(p, q) on the residuals (statsmodels);
* ``daily_profile`` — too sparse for an ARMA: a smooth mean daily profile (a
  seasonal-naive averaged over every day seen, so one busy day does not dominate);
* ``smoothed_rate`` — under a day of history: an exponentially weighted mean rate.

Every method is expressed as coefficients on the same Fourier basis plus an
optional residual path, so prediction is one matrix product for all models.
"""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from prewarm.forecast.threads import one_thread

DAY_S = 86400.0
WEEK_S = 7 * DAY_S


@dataclass(frozen=True)
class SeasonalConfig:
    daily_harmonics: int = 6
    weekly_harmonics: int = 3
    profile_harmonics: int = 3
    weekly_min_days: float = 14.0
    min_arima_days: float = 2.0
    min_profile_days: float = 1.0
    min_arima_rate: float = 0.1  # mean requests per window
    arma_order: tuple[int, int] = (1, 1)
    arma_days: float = 3.0  # the ARMA is fitted on this much recent residual history
    rate_half_life_s: float = 6 * 3600.0


def n_basis(cfg: SeasonalConfig) -> int:
    return 1 + 2 * cfg.daily_harmonics + 2 * cfg.weekly_harmonics


def basis(window_idx: np.ndarray, window_s: float, cfg: SeasonalConfig) -> np.ndarray:
    """Fourier design matrix (len(window_idx), n_basis): constant, daily pairs, weekly pairs, at window centres."""
    t = (np.asarray(window_idx, dtype=float) + 0.5) * window_s
    cols = [np.ones_like(t)]
    for k in range(1, cfg.daily_harmonics + 1):
        a = 2 * np.pi * k * t / DAY_S
        cols += [np.sin(a), np.cos(a)]
    for k in range(1, cfg.weekly_harmonics + 1):
        a = 2 * np.pi * k * t / WEEK_S
        cols += [np.sin(a), np.cos(a)]
    return np.column_stack(cols)


@dataclass
class SeasonalFit:
    """All models' seasonal components; ``path`` is the ARMA residual forecast for windows ``path_first..``."""

    models: list[str]
    methods: list[str]
    coef: np.ndarray  # (M, n_basis)
    path_first: int
    path: np.ndarray  # (M, path_len)
    arma_params: dict[str, list[float]] = field(default_factory=dict)
    window_s: float = 300.0
    cfg: SeasonalConfig = field(default_factory=SeasonalConfig)

    def at(self, window_idx: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Forecast mean (>= 0) for the given absolute windows, shape (M or len(rows), len(window_idx))."""
        idx = np.asarray(window_idx, dtype=np.int64)
        coef = self.coef if rows is None else self.coef[rows]
        out = coef @ basis(idx, self.window_s, self.cfg).T
        rel = idx - self.path_first
        ok = (rel >= 0) & (rel < self.path.shape[1])
        if ok.any():
            path = self.path if rows is None else self.path[rows]
            out[:, ok] += path[:, rel[ok]]
        return np.asarray(np.maximum(out, 0.0), dtype=float)


def _ewm_rate(y: np.ndarray, window_s: float, half_life_s: float) -> float:
    w = 0.5 ** ((len(y) - 1 - np.arange(len(y))) * window_s / half_life_s)
    return float(np.dot(w, y) / w.sum()) if len(y) else 0.0


def single_threaded_worker() -> None:
    """Pool initializer: load statsmodels (and with it scipy's own OpenBLAS) first, then limit every library."""
    import statsmodels.tsa.arima.model  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def make_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool for ARMA fits: spawned (safe next to DuckDB's and asyncio's threads), one BLAS thread each.

    One BLAS thread matters: the fits are small matrix work, and OpenBLAS's own
    threads fighting over two cores made each fit 15 times slower when measured.
    """
    return ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn"),
                               initializer=single_threaded_worker)


def _quick_params(resid: np.ndarray, p: int, q: int) -> np.ndarray:
    """Hannan-Rissanen ARMA estimates (two least-squares passes, no optimiser), pulled inside the stationary region."""
    from statsmodels.tsa.arima.model import ARIMA

    hr = ARIMA(resid, order=(p, 0, q), trend="n", enforce_stationarity=False,
               enforce_invertibility=False).fit(method="hannan_rissanen")
    return np.asarray(np.clip(np.asarray(hr.params[: p + q], dtype=float), -0.98, 0.98), dtype=float)


def fit_arma_task(task: tuple[np.ndarray, tuple[int, int], list[float] | None, int, bool]
                  ) -> tuple[list[float], np.ndarray] | None:
    """One ARMA fit (top level so a process pool can run it); None when statsmodels cannot fit it.

    With ``optimise`` false the parameters are not re-estimated by maximum
    likelihood: the previous ones (or quick Hannan-Rissanen ones) are run
    through one Kalman filter pass, which is all an intermediate fit needs.
    """
    from statsmodels.tsa.arima.model import ARIMA

    resid, (p, q), start, horizon, optimise = task
    if np.allclose(resid, resid[0]):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = ARIMA(resid, order=(p, 0, q), trend="n", concentrate_scale=True)
            warm = start is not None and len(start) == len(model.param_names)
            if optimise:
                res = model.fit(start_params=np.asarray(start, dtype=float)) if warm else model.fit()
            else:
                res = model.filter(np.asarray(start, dtype=float) if warm else _quick_params(resid, p, q))
            path = np.asarray(res.forecast(horizon), dtype=float)
        except (ValueError, np.linalg.LinAlgError):
            return None
    if not np.all(np.isfinite(path)):
        return None
    return [float(v) for v in res.params], path


def fit_seasonal(counts: np.ndarray, models: Sequence[str], first: int, window_s: float, cfg: SeasonalConfig,
                 path_len: int, previous: dict[str, list[float]] | None = None,
                 executor: Executor | None = None,
                 progress: Callable[[int, int], None] | None = None, optimise: bool = True) -> SeasonalFit:
    """Fit every model's seasonal component on ``counts`` (M, T) whose first column is window ``first``.

    The path covers windows ``first+T .. first+T+path_len-1``: everything until the
    next refit is precomputed here so that predict() stays a matrix product.
    """
    M, T = counts.shape
    K = n_basis(cfg)
    coef = np.zeros((M, K))
    path = np.zeros((M, path_len))
    methods: list[str] = []
    per_day = DAY_S / window_s
    X_all = basis(np.arange(first, first + T), window_s, cfg)
    n_daily = 1 + 2 * cfg.daily_harmonics
    n_profile = 1 + 2 * cfg.profile_harmonics
    tasks: list[tuple[int, tuple[np.ndarray, tuple[int, int], list[float] | None, int, bool]]] = []
    arma_len = int(round(cfg.arma_days * per_day))
    for i in range(M):
        y = counts[i]
        nz = np.flatnonzero(y)
        start = int(nz[0]) if len(nz) else T
        days = (T - start) / per_day
        active = y[start:]
        rate = float(active.mean()) if len(active) else 0.0
        if days < cfg.min_profile_days:
            coef[i, 0] = _ewm_rate(active, window_s, cfg.rate_half_life_s)
            methods.append("smoothed_rate")
            continue
        if days < cfg.min_arima_days or rate < cfg.min_arima_rate:
            cols = np.r_[0:n_profile]
            methods.append("daily_profile")
        else:
            n_cols = n_daily + (2 * cfg.weekly_harmonics if days >= cfg.weekly_min_days else 0)
            cols = np.r_[0:n_cols]
            methods.append("arima")
        X = X_all[start:, cols]
        beta, *_ = np.linalg.lstsq(X, active, rcond=None)
        coef[i, cols] = beta
        if methods[-1] == "arima":
            resid = active - X @ beta
            start_params = (previous or {}).get(models[i])
            tasks.append((i, (resid[-arma_len:], cfg.arma_order, start_params, path_len, optimise)))

    arma_params: dict[str, list[float]] = {}
    total = len(tasks)
    if progress:
        progress(0, total)
    payloads = [t for _, t in tasks]
    with one_thread():
        results = (executor.map(fit_arma_task, payloads, chunksize=max(1, total // 16))
                   if executor is not None and total > 1 else map(fit_arma_task, payloads))
        for done, ((i, _), res) in enumerate(zip(tasks, results, strict=False), start=1):
            if res is None:
                methods[i] = "harmonic"
            else:
                params, p = res
                arma_params[models[i]] = params
                path[i] = p
            if progress:
                progress(done, total)
    return SeasonalFit(models=list(models), methods=methods, coef=coef, path_first=first + T, path=path,
                       arma_params=arma_params, window_s=window_s, cfg=cfg)
