"""A trace in the form the replay loop wants: sorted times and integer model ids.

The replay touches every request several times per policy and budget, so the
trace is turned once into numpy arrays (``ts`` float seconds, ``mid`` int32 ids
into ``names``); policies index per-model state by id instead of hashing strings.
The events frame (``ts``, ``model``, ``user``) is kept for the forecaster, which
takes the INTERFACES.md frame.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prewarm.forecast.series import TraceError, load_trace, normalise_events

__all__ = ["Trace", "TraceError", "frame_to_trace", "read_trace"]


@dataclass
class Trace:
    ts: np.ndarray  # float64 seconds, ascending
    mid: np.ndarray  # int32 model id per request
    names: list[str]  # model name per id
    events: pd.DataFrame  # ts, model, user (INTERFACES.md events frame)
    source: str

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def n_models(self) -> int:
        return len(self.names)


def frame_to_trace(df: pd.DataFrame, source: str = "frame") -> Trace:
    """Build a Trace from an events frame (``ts`` float seconds, ``model``, optional ``user``).

    Files are read by ``prewarm.forecast.series.load_trace`` (the one trace reader:
    CSV, Parquet or a `prewarm serve` DuckDB file; ISO timestamps become epoch
    seconds there); this only sorts and turns model names into integer ids.
    """
    missing = {"ts", "model"} - set(df.columns)
    if missing:
        raise TraceError(f"{source}: missing column(s) {sorted(missing)}; a trace needs ts, model and optionally user")
    df = df[df["model"].notna()]
    ts = pd.to_numeric(df["ts"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(ts).all():
        raise TraceError(f"{source}: column ts has missing or non-numeric values (seconds expected)")
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    models = df["model"].astype(str).to_numpy()[order]
    users = df["user"].to_numpy(dtype=object)[order] if "user" in df.columns else np.full(len(ts), None, dtype=object)
    codes, uniques = pd.factorize(models, sort=True)
    names = [str(u) for u in uniques]
    events = normalise_events(pd.DataFrame({"ts": ts, "model": models, "user": users}))
    return Trace(ts=ts, mid=codes.astype(np.int32), names=names, events=events, source=source)


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """DuckDB draws its progress bar on file descriptor 1 for reads over ~2 s; `--format json|csv` owns stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def read_trace(path: str | Path) -> Trace:
    """Read CSV, Parquet or a `prewarm serve` DuckDB file into a Trace (through the forecaster's reader)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"trace not found: {p}")
    with _stdout_to_stderr():
        frame = load_trace(p)
    trace = frame_to_trace(frame, str(p))
    if len(trace) == 0:
        raise TraceError(f"{p}: the trace has no requests with a model")
    return trace
