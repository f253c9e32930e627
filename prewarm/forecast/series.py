"""Events frames and per-model count series.

An *events frame* (INTERFACES.md) is a pandas DataFrame with ``ts`` (float
seconds, sorted), ``model`` (str) and ``user`` (str or None). It comes from a
trace file (the replay format) or from the ``requests`` table, and every later
step (counts per window, user features, backtests) starts from it, so the
forecaster never depends on where the data was stored.

Reading goes through DuckDB (``read_parquet`` / ``read_csv``) because it parses
ISO timestamps, sorts millions of rows and reads both formats with one code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from prewarm.errors import TraceError as TraceError


def _is_duckdb_file(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(12)
    return head[8:12] == b"DUCK"


def _ts_expr(column_type: str, column: str = "ts") -> str:
    """SQL turning a time column into float seconds, whatever type DuckDB inferred."""
    t = column_type.upper()
    if t.startswith("TIMESTAMP") or t == "DATE":
        return f"epoch({column}::TIMESTAMPTZ)"
    if t in ("VARCHAR", "TEXT"):
        return f"coalesce(TRY_CAST({column} AS DOUBLE), epoch(TRY_CAST({column} AS TIMESTAMPTZ)))"
    return f"{column}::DOUBLE"


def load_trace(path: str | Path) -> pd.DataFrame:
    """Read a replay trace (CSV/Parquet ``ts, model[, user]`` or a prewarm DuckDB file) as an events frame.

    ``ts`` may be float seconds or ISO timestamps (turned into epoch seconds).
    Rows without a model are dropped: they cannot be forecast.
    """
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"trace not found: {p}")
    if _is_duckdb_file(p):
        try:
            con = duckdb.connect(str(p), read_only=True)
        except duckdb.Error as exc:
            raise TraceError(f"cannot open DuckDB file {p}: {exc}") from None
        try:
            return events_from_requests(con)
        finally:
            con.close()
    con = duckdb.connect()
    try:
        src = _file_source(p)
        types = _column_types(con, src, f"trace {p}")
        missing = [c for c in ("ts", "model") if c not in types]
        if missing:
            raise TraceError(f"trace {p} lacks column(s) {', '.join(missing)} (has: {', '.join(types)})")
        user = '"user"::VARCHAR' if "user" in types else "NULL::VARCHAR"
        sql = (f"SELECT {_ts_expr(types['ts'])} AS ts, model::VARCHAR AS model, {user} AS \"user\" "
               f"FROM {src} WHERE model IS NOT NULL")
        df = _query(con, f"SELECT * FROM ({sql}) ORDER BY ts", f"trace {p}")
    finally:
        con.close()
    if df["ts"].isna().any():
        bad = int(df["ts"].isna().sum())
        raise TraceError(f"trace {p}: {bad} row(s) have a ts that is neither seconds nor a timestamp")
    return normalise_events(df)


FORECAST_TIMES = ("made_at", "window_start", "window_end")


def load_forecasts(path: str | Path) -> pd.DataFrame:
    """Recorded forecasts: a prewarm DuckDB file's ``forecasts`` table, or CSV/Parquet with its columns.

    Returns ``made_at, model, window_start, window_end, expected_requests, p_any``
    (times as epoch seconds, sorted by ``made_at``): what a service's planner was
    handed, so a replay can plan from the forecasts that were really made.
    """
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"forecasts not found: {p}")
    duck = _is_duckdb_file(p)
    try:
        con = duckdb.connect(str(p), read_only=True) if duck else duckdb.connect()
    except duckdb.Error as exc:
        raise TraceError(f"cannot open DuckDB file {p}: {exc}") from None
    try:
        src = "forecasts" if duck else _file_source(p)
        types = _column_types(con, src, f"forecasts {p}")
        missing = [c for c in (*FORECAST_TIMES, "model", "expected_requests") if c not in types]
        if missing:
            raise TraceError(f"forecasts {p} lack column(s) {', '.join(missing)} (has: {', '.join(types)})")
        p_any = "p_any::DOUBLE" if "p_any" in types else "1 - exp(-expected_requests::DOUBLE)"
        times = ", ".join(f"{_ts_expr(types[c], c)} AS {c}" for c in FORECAST_TIMES)
        sql = (f"SELECT {times}, model::VARCHAR AS model, expected_requests::DOUBLE AS expected_requests, "
               f"{p_any} AS p_any FROM {src} WHERE model IS NOT NULL")
        df = _query(con, f"SELECT * FROM ({sql}) ORDER BY made_at, model, window_start", f"forecasts {p}")
    finally:
        con.close()
    bad = df[[*FORECAST_TIMES, "expected_requests"]].isna().any(axis=1)
    if bad.any():
        raise TraceError(f"forecasts {p}: {int(bad.sum())} row(s) lack a time or expected_requests")
    if df.empty:
        raise TraceError(f"forecasts {p}: no rows")
    return df


def _file_source(path: Path) -> str:
    """The DuckDB table function reading a CSV or Parquet file (by its suffix)."""
    reader = "read_parquet" if path.suffix.lower() in (".parquet", ".pq") else "read_csv"
    return f"{reader}('{_sql_string(str(path))}')"


def _column_types(con: duckdb.DuckDBPyConnection, src: str, what: str) -> dict[str, str]:
    """Lower-cased column name -> DuckDB type of ``src``; a file DuckDB cannot parse is one TraceError line."""
    try:
        return {c[0].lower(): c[1] for c in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    except duckdb.Error as exc:
        raise TraceError(f"cannot read {what}: {str(exc).splitlines()[0]}") from None


def _query(con: duckdb.DuckDBPyConnection, sql: str, what: str) -> pd.DataFrame:
    try:
        return con.execute(sql).df()
    except duckdb.Error as exc:
        raise TraceError(f"cannot read {what}: {str(exc).splitlines()[0]}") from None


def _sql_string(text: str) -> str:
    return text.replace("'", "''")


def events_from_requests(con: duckdb.DuckDBPyConnection, since_ts: float | None = None) -> pd.DataFrame:
    """The ``requests`` table as an events frame (epoch seconds), optionally only rows at or after ``since_ts``."""
    sql = events_sql(since_ts)
    return normalise_events(con.execute(sql).df())


def events_sql(since_ts: float | None = None) -> str:
    """SQL selecting the events frame from ``requests``; shared with the service, which reads via its Store."""
    # A 404 asked for a model the upstream does not have: demand for nothing that could be loaded.
    where = "model IS NOT NULL AND ts_start IS NOT NULL AND status IS DISTINCT FROM 404"
    if since_ts is not None:
        where += f" AND ts_start >= to_timestamp({float(since_ts)!r})"
    return (f"SELECT epoch(ts_start) AS ts, model, user_id AS \"user\" FROM requests "
            f"WHERE {where} ORDER BY ts")


def normalise_events(df: pd.DataFrame) -> pd.DataFrame:
    """Coerce a frame with ts, model, user columns to the events contract (float ts, object strings, None users)."""
    users = (df["user"].to_numpy(dtype=object, na_value=None)  # type: ignore[call-overload]  # stubs omit None
             if "user" in df else np.full(len(df), None))
    return pd.DataFrame({
        "ts": df["ts"].to_numpy(dtype=float),
        "model": df["model"].to_numpy(dtype=object),
        "user": pd.Series(users, dtype=object),
    })


def check_events(events: pd.DataFrame) -> None:
    """Reject a frame that breaks the events contract early, with the reason."""
    missing = [c for c in ("ts", "model") if c not in events.columns]
    if missing:
        raise ValueError(f"events frame lacks column(s): {', '.join(missing)}")
    ts = events["ts"].to_numpy(dtype=float)
    if len(ts) > 1 and np.any(np.diff(ts) < 0):
        raise ValueError("events frame must be sorted by ts")


def before(events: pd.DataFrame, ts: float) -> pd.DataFrame:
    """Events strictly before ``ts`` (the frame is sorted, so this is a binary search)."""
    k = int(np.searchsorted(events["ts"].to_numpy(dtype=float), ts, side="left"))
    return events.iloc[:k]


def between(events: pd.DataFrame, start: float, end: float) -> pd.DataFrame:
    ts = events["ts"].to_numpy(dtype=float)
    lo, hi = np.searchsorted(ts, [start, end], side="left")
    return events.iloc[int(lo):int(hi)]


@dataclass
class CountMatrix:
    """Requests per model (rows) per window (columns), windows ``first .. first+n-1`` (index = floor(ts / window_s))."""

    models: list[str]
    first: int
    counts: np.ndarray  # float, shape (len(models), n_windows)
    window_s: float

    @property
    def n_windows(self) -> int:
        return int(self.counts.shape[1])


def window_index(ts: np.ndarray | float, window_s: float) -> np.ndarray:
    return np.floor(np.asarray(ts, dtype=float) / window_s).astype(np.int64)


def count_matrix(events: pd.DataFrame, first: int, last: int, window_s: float,
                 models: list[str] | None = None) -> CountMatrix:
    """Counts for windows ``first..last-1`` (absolute window indices), one vectorised bincount.

    ``models`` fixes the row order; events of other models are ignored. Without it
    the rows are the models present, in order of first appearance.
    """
    n = max(int(last) - int(first), 0)
    part = between(events, first * window_s, last * window_s)
    if models is None:
        codes, uniques = pd.factorize(part["model"], sort=False)
        models = [str(m) for m in uniques]
    else:
        codes = pd.Index(models).get_indexer(pd.Index(part["model"]))
    w = window_index(part["ts"].to_numpy(dtype=float), window_s) - first
    keep = codes >= 0
    flat = codes[keep].astype(np.int64) * n + w[keep]
    counts = np.bincount(flat, minlength=len(models) * n).astype(float).reshape(len(models), n)
    return CountMatrix(models=list(models), first=int(first), counts=counts, window_s=window_s)
