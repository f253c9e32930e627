"""Backtest: fit on everything but the most recent data, score forecasts of that held-back part.

Every training run does this, so a model that got worse is caught before it
serves (see :func:`is_worse`). Forecasts are issued every ``horizon`` windows
through the held-back span, each for the next ``horizon`` windows, exactly as
the service issues them; each window is scored once, at a mix of lead times.

Scores per variant: MAE of the counts, mean Poisson deviance (means floored at
1e-3, as a mean of 0 with a request would be infinitely wrong), and the Brier
score of p_any. Variants: ``combined`` (the served model), ``arima`` (the
seasonal model alone), ``arima_user`` (seasonal + user features: the ablation),
``seasonal_naive`` (same window yesterday) and ``moving_average`` (last hour).
The baselines' p_any is the Poisson one, 1 - exp(-mean).
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import numpy as np
import pandas as pd

from prewarm.forecast.model import ForecastParams, HeatForecaster, Progress, nb_p_any
from prewarm.forecast.series import check_events, count_matrix

VARIANTS = ("combined", "arima_user", "arima", "seasonal_naive", "moving_average")
MU_FLOOR = 1e-3


def poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    mu = np.maximum(mu, MU_FLOOR)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(np.mean(2.0 * (term - (y - mu))))


def scores(y: np.ndarray, mu: np.ndarray, p_any: np.ndarray) -> dict[str, float]:
    hit = (y > 0).astype(float)
    return {"mae": float(np.mean(np.abs(y - mu))),
            "poisson_deviance": poisson_deviance(y, mu),
            "brier": float(np.mean((p_any - hit) ** 2))}


def calibration_table(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Predicted p_any against the observed frequency of >= 1 request, per probability decile."""
    hit = (y > 0).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(sel.sum()),
                        "mean_p": float(p[sel].mean()), "observed": float(hit[sel].mean())})
    return out


def backtest(events: pd.DataFrame, params: ForecastParams, previous: HeatForecaster | None = None, *,
             executor: Executor | None = None, progress: Progress | None = None,
             ) -> tuple[dict[str, Any], HeatForecaster | None]:
    """Scores on the last ``params.backtest_days`` of ``events``, and the forecaster fitted before them.

    The fitted forecaster is returned so the final fit can warm-start from it.
    With too little data for a hold-out, the metrics say so and no forecaster is returned.
    """
    check_events(events)
    w, H = params.window_s, params.horizon
    if len(events) == 0:
        return {"skipped": "no events"}, None
    last = int(np.floor(float(events["ts"].iloc[-1]) / w))  # the last (maybe partial) window is not scored
    first = int(np.floor(float(events["ts"].iloc[0]) / w))
    hold = int(round(params.backtest_days * params.per_day))
    split = last - hold
    if split - first < params.per_day:
        return {"skipped": f"under {params.backtest_days + 1:g} days of data"}, None
    labelled = (lambda stage, done, total: progress(f"backtest: {stage}", done, total)) if progress else None
    f = HeatForecaster.fit(events, split * w, params, previous, executor=executor, progress=labelled,
                           ablation=True)
    ys: list[np.ndarray] = []
    mus: dict[str, list[np.ndarray]] = {}
    for n in range(split, last, H):
        h = min(H, last - n)
        models, _, means = f.predict_variants(events, n * w, h)
        actual = count_matrix(events, n, n + h, w, models=models).counts.reshape(-1)
        ys.append(actual)
        for k, v in means.items():
            mus.setdefault(k, []).append(v)
    y = np.concatenate(ys)
    result: dict[str, Any] = {
        "holdout": {"start": float(split * w), "end": float(last * w), "windows": int(last - split),
                    "rows": int(len(y)), "requests": float(y.sum())},
        "fit_methods": f.fit_report.get("method_counts", {}),
        "variants": {},
    }
    for name in VARIANTS:
        if name not in mus:
            continue
        mu = np.concatenate(mus[name])
        p = nb_p_any(mu, f.dispersion) if name == "combined" else -np.expm1(-np.maximum(mu, 0.0))
        result["variants"][name] = scores(y, mu, p)
    comb = np.concatenate(mus["combined"])
    result["calibration"] = calibration_table(nb_p_any(comb, f.dispersion), y)
    result["skill"] = skill(result)
    return result, f


def skill(metrics: dict[str, Any]) -> dict[str, float]:
    """1 - combined / seasonal-naive for MAE and Brier: scale-free, so runs on different data compare."""
    v = metrics.get("variants", {})
    if "combined" not in v or "seasonal_naive" not in v:
        return {}
    out = {}
    for key in ("mae", "brier"):
        base = v["seasonal_naive"][key]
        out[key] = float(1.0 - v["combined"][key] / base) if base > 0 else 0.0
    return out


def is_worse(new: dict[str, Any], current: dict[str, Any] | None, tolerance: float = 0.05) -> bool:
    """Whether a new run should not replace the serving one.

    Runs are compared by skill over seasonal-naive on their own hold-outs (the
    hold-outs differ, raw errors would not compare). A run with no backtest is
    not judged worse: there is nothing to judge it by.
    """
    if not current:
        return False
    ns, cs = new.get("skill") or {}, current.get("skill") or {}
    if not ns or not cs:
        return False
    return any(ns[k] < cs[k] - tolerance for k in ("mae", "brier") if k in ns and k in cs)


def format_table(metrics: dict[str, Any]) -> str:
    """The backtest as a text table (what `prewarm train` prints)."""
    if "variants" not in metrics:
        return f"backtest: {metrics.get('skipped', 'not run')}"
    lines = [f"{'variant':<16}{'MAE':>10}{'Poisson dev':>13}{'Brier':>10}"]
    for name, s in metrics["variants"].items():
        lines.append(f"{name:<16}{s['mae']:>10.4f}{s['poisson_deviance']:>13.4f}{s['brier']:>10.4f}")
    h = metrics["holdout"]
    lines.append(f"hold-out: {h['windows']} windows x models = {h['rows']} rows, {h['requests']:.0f} requests")
    sk = metrics.get("skill", {})
    if sk:
        lines.append(f"skill vs seasonal-naive: MAE {sk['mae']:+.1%}, Brier {sk['brier']:+.1%}")
    return "\n".join(lines)
