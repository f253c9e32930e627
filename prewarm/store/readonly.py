"""Read-only SQL: the guard both read paths share, and JSON-safe values.

`prewarm sql` runs user SQL against the live request log, either on the file or
through the running service. Both refuse anything that could change the database,
judged by DuckDB's own parser rather than by matching keywords.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from typing import Any

import duckdb

_READ_TYPES = {duckdb.StatementType.SELECT}


class ReadOnlyError(ValueError):
    """The SQL is not a single read-only statement; the message says why."""


def check_read_only(sql: str) -> str:
    """Return the one statement in `sql` if it only reads; raise ReadOnlyError otherwise."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise ReadOnlyError(f"SQL does not parse: {_first_line(exc)}") from None
    if not statements:
        raise ReadOnlyError("no SQL statement given")
    if len(statements) > 1:
        raise ReadOnlyError("give one statement at a time")
    stmt = statements[0]
    if stmt.type in _READ_TYPES:
        return stmt.query
    if stmt.type == duckdb.StatementType.EXPLAIN:
        _check_explained(stmt.query)
        return stmt.query
    name = stmt.type.name.lower().replace("_", " ")
    raise ReadOnlyError(f"only read-only queries (SELECT, EXPLAIN) are allowed here, not {name}")


def _check_explained(query: str) -> None:
    """EXPLAIN ANALYZE runs its statement, so the explained statement must read only too."""
    words = query.strip().split(None, 2)
    rest = " ".join(words[1:])
    if words[1:2] and words[1].lower() == "analyze":
        rest = words[2] if len(words) > 2 else ""
    try:
        inner = duckdb.extract_statements(rest)
    except duckdb.Error:
        raise ReadOnlyError("EXPLAIN only of a plain SELECT is allowed here") from None
    if len(inner) != 1 or inner[0].type not in _READ_TYPES:
        raise ReadOnlyError("EXPLAIN only of a plain SELECT is allowed here")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def jsonable(value: Any) -> Any:
    """A value JSON can carry, the same whichever read path produced it."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def execute_read(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> tuple[list[str], list[tuple]]:
    """Run one checked read-only statement; columns and rows as DuckDB returns them."""
    query = check_read_only(sql)
    rel = con.execute(query, params) if params is not None else con.execute(query)
    columns = [d[0] for d in (rel.description or [])]
    return columns, rel.fetchall()
