"""A trace in the form the replay loop wants: sorted times and integer model ids.

The replay touches every request several times per policy and budget, so the
trace is turned once into numpy arrays (``ts`` float seconds, ``mid`` int32 ids
into ``names``); policies index per-model state by id instead of hashing strings.
The events frame (``ts``, ``model``, ``user``) is kept for the forecaster, which
takes the INTERFACES.md frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

_DUCKDB_MAGIC = b"DUCK"


class TraceError(ValueError):
    """The trace file cannot be read as a trace; the message says why."""


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


def is_duckdb_file(path: Path) -> bool:
    """DuckDB files carry 'DUCK' at byte 8; checking it beats trusting the extension."""
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[8:12] == _DUCKDB_MAGIC


def _read_duckdb(path: Path) -> pd.DataFrame:
    import duckdb

    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise TraceError(f"{path}: cannot open the DuckDB file read-only ({exc}); is `prewarm serve` holding it?") from None
    try:
        return con.execute(
            "SELECT epoch(ts_start) AS ts, model, user_id AS \"user\" FROM requests "
            "WHERE model IS NOT NULL AND ts_start IS NOT NULL ORDER BY ts_start"
        ).df()
    except duckdb.Error as exc:
        raise TraceError(f"{path}: not a prewarm database (no readable requests table: {exc})") from None
    finally:
        con.close()


def _to_seconds(col: pd.Series, path: Path) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col):
        out = col.to_numpy(dtype=np.float64)
    else:
        try:
            stamps = pd.to_datetime(col, utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise TraceError(f"{path}: column ts is neither seconds nor ISO timestamps ({exc})") from None
        out = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
    if not np.isfinite(out).all():
        raise TraceError(f"{path}: column ts has missing or non-finite values")
    return out


def frame_to_trace(df: pd.DataFrame, source: str = "frame") -> Trace:
    """Build a Trace from an events frame (ts seconds or ISO, model, optional user)."""
    path = Path(source)
    missing = {"ts", "model"} - set(df.columns)
    if missing:
        raise TraceError(f"{source}: missing column(s) {sorted(missing)}; a trace needs ts, model and optionally user")
    df = df[df["model"].notna()]
    ts = _to_seconds(df["ts"], path)
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    models = df["model"].astype(str).to_numpy()[order]
    users = df["user"].to_numpy(dtype=object)[order] if "user" in df.columns else np.full(len(ts), None, dtype=object)
    codes, uniques = pd.factorize(models, sort=True)
    names = [str(u) for u in uniques]
    events = pd.DataFrame({"ts": ts, "model": models, "user": users})
    events["user"] = events["user"].where(pd.notna(events["user"]), None)
    return Trace(ts=ts, mid=codes.astype(np.int32), names=names, events=events, source=source)


def read_trace(path: str | Path) -> Trace:
    """Read CSV, Parquet or a `prewarm serve` DuckDB file into a Trace."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"trace not found: {p}")
    if is_duckdb_file(p):
        df = _read_duckdb(p)
    elif p.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(p)
    elif p.suffix.lower() in (".csv", ".txt") or p.suffix.lower() == ".gz":
        df = pd.read_csv(p)
    else:
        raise TraceError(f"{p}: unknown trace format (use .csv, .parquet or a prewarm DuckDB file)")
    if len(df) == 0:
        raise TraceError(f"{p}: the trace has no requests")
    trace = frame_to_trace(df, str(p))
    if len(trace) == 0:
        raise TraceError(f"{p}: the trace has no requests with a model")
    return trace
