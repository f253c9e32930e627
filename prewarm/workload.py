"""Synthetic request workloads in the replay trace format (``ts, model, user``).

Why synthetic: the public traces lack either users or model names, and tests
need data with known structure. The generator reproduces what makes
prewarming worth doing:

* Zipf model popularity (a few models take most requests);
* daily and weekly cycles: each user works office hours (09-18, a lunch dip) in
  their own time zone, and weekends are quiet;
* per-user preferences: each user sticks to one to four models;
* models that appear late (released part-way through), and short bursts.

``ts`` is Unix epoch seconds (float). The trace starts at ``EPOCH_START``,
Monday 2026-11-02 00:00 UTC (1793577600), so hour of day and day of week in
the data are real UTC calendar times. Model names are Ollama tags from a pool
(``llama3.1:8b``, ``qwen2.5:7b`` ...), with ``-ftN`` variants when more models
are asked for than the pool holds, so the catalog's default size rule applies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

EPOCH_START = 1793577600.0  # Monday 2026-11-02 00:00:00 UTC
SLOT_S = 300.0
MODEL_POOL = (
    "llama3.1:8b", "qwen2.5:7b", "mistral:7b", "gemma2:9b", "llama3.2:3b", "phi3:3.8b",
    "qwen2.5-coder:7b", "deepseek-r1:8b", "llama3.1:70b", "gemma2:2b", "qwen2.5:14b", "codellama:13b",
    "deepseek-r1:14b", "llama3.2:1b", "phi4:14b", "mistral-nemo:12b", "qwen2.5:32b", "starcoder2:3b",
    "qwen2.5:0.5b", "gemma2:27b", "deepseek-coder-v2:16b", "llava:7b", "qwen2.5:3b", "yi:9b",
    "command-r:35b", "granite3.1-dense:8b", "olmo2:13b", "smollm2:1.7b", "falcon3:10b", "qwen2.5:72b",
)
TZ_OFFSETS_H = (-8.0, -7.0, -5.0, -4.0, 0.0, 1.0, 2.0, 3.0, 5.5, 8.0, 9.0)
TZ_WEIGHTS = (0.12, 0.06, 0.14, 0.06, 0.1, 0.16, 0.1, 0.04, 0.08, 0.1, 0.04)


def model_names(n: int, rng: np.random.Generator) -> list[str]:
    """n distinct Ollama-style tags, popularity order shuffled by the seed."""
    pool = list(MODEL_POOL)
    rng.shuffle(pool)
    names = pool[:n]
    k = 1
    while len(names) < n:
        names += [f"{base}-ft{k}" for base in pool][: n - len(names)]
        k += 1
    return names


def _office_profile(local_hour: np.ndarray) -> np.ndarray:
    """Relative activity by local hour: office hours, a lunch dip, a little evening and night use."""
    h = np.mod(local_hour, 24.0)
    work = ((h >= 9) & (h < 12)) | ((h >= 13) & (h < 18))
    return np.where(work, 1.0, np.where((h >= 12) & (h < 13), 0.5, np.where((h >= 18) & (h < 22), 0.15, 0.02)))


def synth(models: int, users: int, days: float, seed: int, rate: float | None = None,
          zipf_s: float = 1.1, late_fraction: float = 0.1, weekend_factor: float = 0.15,
          bursts_per_day: float = 0.5) -> pd.DataFrame:
    """A workload as an events frame (ts sorted), reproducible from ``seed``.

    ``rate`` is the mean requests per user per office hour (default 1.5).
    """
    if models < 1 or users < 1 or days <= 0:
        raise ValueError("models and users must be >= 1 and days > 0")
    rate = 1.5 if rate is None else float(rate)
    if rate <= 0:
        raise ValueError("rate must be > 0")
    rng = np.random.default_rng(seed)
    names = np.asarray(model_names(models, rng), dtype=object)
    pop = 1.0 / np.arange(1, models + 1) ** zipf_s
    pop /= pop.sum()

    # users: time zone, intensity, a few favourite models drawn by popularity
    tz = rng.choice(np.asarray(TZ_OFFSETS_H), size=users, p=np.asarray(TZ_WEIGHTS) / sum(TZ_WEIGHTS))
    shift = rng.normal(0.0, 0.75, size=users)
    intensity = rate * rng.lognormal(-0.32, 0.8, size=users)  # mean ~ rate
    k_max = min(4, models)
    n_fav = np.minimum(1 + rng.binomial(3, 0.4, size=users), k_max)
    fav = np.zeros((users, k_max), dtype=np.int64)
    share = np.zeros((users, k_max))
    for u in range(users):
        picks = rng.choice(models, size=n_fav[u], replace=False, p=pop)
        fav[u, : n_fav[u]] = picks
        share[u, : n_fav[u]] = rng.dirichlet(np.ones(n_fav[u]) * 0.8)

    # expected requests per user per 5-minute slot, then Poisson counts
    n_slots = int(round(days * 86400 / SLOT_S))
    centre = EPOCH_START + (np.arange(n_slots) + 0.5) * SLOT_S
    local = (centre[None, :] / 3600.0 + tz[:, None] + shift[:, None])  # local hours since epoch
    dow = np.floor(np.mod(local / 24.0 + 3.0, 7.0))  # 1970-01-01 was a Thursday (3)
    lam = intensity[:, None] * SLOT_S / 3600.0 * _office_profile(local) * np.where(dow >= 5, weekend_factor, 1.0)
    counts = rng.poisson(lam)
    u_idx, s_idx = np.nonzero(counts)
    reps = counts[u_idx, s_idx]
    u_ev = np.repeat(u_idx, reps)
    s_ev = np.repeat(s_idx, reps)

    # each request goes to one of the user's favourites
    cum = np.cumsum(share, axis=1)[u_ev]
    pick = (rng.random(len(u_ev))[:, None] > cum).sum(axis=1)
    m_ev = fav[u_ev, np.minimum(pick, k_max - 1)]

    # late models: released part-way through; earlier picks go to the most popular model
    release = np.zeros(models)
    n_late = int(round(late_fraction * models)) if models > 3 else 0
    if n_late:
        late = rng.choice(np.arange(3, models), size=min(n_late, models - 3), replace=False)
        release[late] = rng.uniform(0.3, 0.8, size=len(late)) * n_slots
    m_ev = np.where(s_ev < release[m_ev], 0, m_ev)

    ts = EPOCH_START + (s_ev + rng.random(len(s_ev))) * SLOT_S
    parts_ts, parts_m, parts_u = [ts], [m_ev], [u_ev]

    # bursts: a model suddenly hot for 10-60 minutes, from users who like it
    n_bursts = rng.poisson(bursts_per_day * days)
    for _ in range(n_bursts):
        m = int(rng.choice(models, p=pop))
        start = rng.uniform(max(release[m], 0), n_slots) * SLOT_S
        dur = rng.uniform(600, 3600)
        n = rng.poisson(rng.uniform(0.5, 3.0) * dur / 60.0)
        fans = np.flatnonzero(((fav == m) & (np.arange(k_max)[None, :] < n_fav[:, None])).any(axis=1))
        pool = fans if len(fans) else np.arange(users)
        parts_ts.append(EPOCH_START + start + rng.uniform(0, dur, size=n))
        parts_m.append(np.full(n, m))
        parts_u.append(rng.choice(pool, size=n))

    ts = np.concatenate(parts_ts)
    m_all = np.concatenate(parts_m)
    u_all = np.concatenate(parts_u)
    end = EPOCH_START + n_slots * SLOT_S
    keep = ts < end
    order = np.argsort(ts[keep], kind="stable")
    width = len(str(users - 1))
    user_names = np.asarray([f"user{u:0{width}d}" for u in range(users)], dtype=object)
    return pd.DataFrame({
        "ts": ts[keep][order],
        "model": names[m_all[keep][order]],
        "user": user_names[u_all[keep][order]],
    })


def write_trace(df: pd.DataFrame, path: str | Path) -> None:
    """Write an events frame as Parquet or CSV (by suffix) with DuckDB."""
    p = Path(path)
    fmt = "CSV, HEADER" if p.suffix.lower() == ".csv" else "PARQUET"
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.register("trace_df", df)
        target = str(p).replace("'", "''")
        con.execute(f"COPY (SELECT ts, model, \"user\" FROM trace_df ORDER BY ts) TO '{target}' (FORMAT {fmt})")
    finally:
        con.close()


def run_synth(args: argparse.Namespace) -> int:
    """`prewarm workload synth`: write the trace and say what is in it."""
    from prewarm.errors import CommandError

    try:
        df = synth(args.models, args.users, args.days, args.seed, rate=args.rate)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    write_trace(df, args.output)
    top = df["model"].value_counts()
    print(f"wrote {len(df)} requests ({df['model'].nunique()} models, {df['user'].nunique()} users, "
          f"{args.days:g} days) to {args.output}; ts = epoch seconds from Monday 2026-11-02 00:00 UTC; "
          f"busiest model {top.index[0]} ({top.iloc[0] / len(df):.0%} of requests)", file=sys.stderr)
    return 0
