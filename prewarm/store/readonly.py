"""Read-only SQL: the sandbox both read paths share, and JSON-safe values.

`prewarm sql` runs user SQL against the live request log, either on the file or
through the running service. Both refuse anything that could change the database,
judged by DuckDB's own parser rather than by matching keywords, and both run it
sandboxed: a SELECT can still call table functions, and some of them change the
database or the process (``checkpoint()``, ``enable_logging(...)``) or read the
host's files (``read_text('/etc/shadow')``, ``glob('/root/**')``). So:

* the statement is parsed to its syntax tree (``json_serialize_sql``) and every
  table function it calls must be on ``TABLE_FUNCTIONS`` (file readers only with
  ``allow_files``, which only the local file path offers);
* the connection runs with ``SANDBOX_CONFIG``: no file system access from SQL, no
  extension installed or loaded on the fly, and the configuration locked so no
  statement can lift either;
* each query has a time limit after which DuckDB interrupts it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import duckdb

from prewarm.errors import QueryTimeout as QueryTimeout
from prewarm.errors import ReadOnlyError as ReadOnlyError
from prewarm.errors import one_line

_READ_TYPES = {duckdb.StatementType.SELECT}

# Table functions a read-only query may call: generators and the catalog's own descriptions. Everything
# else (checkpoint, enable_logging, enable_profiling, truncate_duckdb_logs, query_table, ...) is refused.
TABLE_FUNCTIONS = frozenset({
    "range", "generate_series", "unnest", "json_each", "json_tree",
    "duckdb_columns", "duckdb_constraints", "duckdb_databases", "duckdb_functions", "duckdb_indexes",
    "duckdb_keywords", "duckdb_schemas", "duckdb_tables", "duckdb_types", "duckdb_views",
    "pragma_table_info", "pragma_show", "pragma_version", "pragma_database_size",
})
# ... and, with allow_files (`prewarm sql --allow-files` on the file itself), the readers of a user's own files.
FILE_FUNCTIONS = frozenset({
    "read_csv", "read_csv_auto", "sniff_csv", "read_parquet", "parquet_scan", "parquet_metadata", "parquet_schema",
    "read_json", "read_json_auto", "read_ndjson", "read_ndjson_auto", "read_text", "read_blob", "glob",
})
# The connection settings of every connection that answers users' SQL. Set before anything else runs on it
# (lock_configuration last): DuckDB then refuses to change them for the rest of the connection's life.
SANDBOX_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}
DEFAULT_TIMEOUT_S = 30.0




def sandbox_config(allow_files: bool = False) -> dict[str, Any]:
    """SANDBOX_CONFIG, with file access only when the local user asked for it (`--allow-files`)."""
    return dict(SANDBOX_CONFIG, enable_external_access=allow_files)


def apply_sandbox(con: duckdb.DuckDBPyConnection) -> None:
    """Sandbox an open connection (the service's, which must migrate and load its spill first)."""
    for name, value in SANDBOX_CONFIG.items():
        con.execute(f"SET {name} = {'true' if value else 'false'}")


def check_read_only(sql: str, allow_files: bool = False) -> str:
    """Return the one statement in `sql` if it only reads; raise ReadOnlyError otherwise."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise ReadOnlyError(f"SQL does not parse: {one_line(exc)}") from None
    if not statements:
        raise ReadOnlyError("no SQL statement given")
    if len(statements) > 1:
        raise ReadOnlyError("give one statement at a time")
    stmt = statements[0]
    if stmt.type in _READ_TYPES:
        _check_functions(stmt.query, allow_files)
        return stmt.query
    if stmt.type == duckdb.StatementType.EXPLAIN:
        _check_functions(_check_explained(stmt.query), allow_files)
        return stmt.query
    name = stmt.type.name.lower().replace("_", " ")
    raise ReadOnlyError(f"only read-only queries (SELECT, EXPLAIN) are allowed here, not {name}")


_parser_local = threading.local()


def _parser() -> duckdb.DuckDBPyConnection:
    """An empty in-memory connection per thread, only ever used to parse (json_serialize_sql)."""
    con = getattr(_parser_local, "con", None)
    if con is None:
        con = _parser_local.con = duckdb.connect(":memory:", config=dict(SANDBOX_CONFIG))
    return con


def _check_functions(query: str, allow_files: bool) -> None:
    """Refuse a table function that is not on the allow-list, wherever in the statement it is called."""
    try:
        tree = json.loads(_parser().execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0])  # type: ignore[index]
    except (duckdb.Error, TypeError, ValueError) as exc:
        raise ReadOnlyError(f"SQL does not parse: {one_line(exc)}") from None
    if tree.get("error"):
        raise ReadOnlyError(f"SQL does not parse: {str(tree.get('error_message', ''))[:200]}")
    allowed = TABLE_FUNCTIONS | FILE_FUNCTIONS if allow_files else TABLE_FUNCTIONS
    for name in _table_functions(tree):
        if name.lower() not in allowed:
            hint = " (reading files needs `prewarm sql --allow-files` on the database file)" if (
                name.lower() in FILE_FUNCTIONS) else ""
            raise ReadOnlyError(f"table function {name}() is not allowed in read-only SQL{hint}")


def _table_functions(node: Any) -> Iterator[str]:
    """Every table function named anywhere in a serialized statement (FROM, joins, subqueries, CTEs)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == "TABLE_FUNCTION":
                fn = item.get("function")
                if isinstance(fn, dict):
                    yield str(fn.get("function_name", ""))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_explained(query: str) -> str:
    """EXPLAIN ANALYZE runs its statement, so the explained statement must read only too; returns it."""
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
    return inner[0].query


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


def execute_read(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None, allow_files: bool = False,
                 timeout: float | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one checked read-only statement; columns and rows as DuckDB returns them.

    With `timeout`, a timer interrupts the query on `con` (use a cursor of its own)
    once it has run that long, and QueryTimeout says so.
    """
    query = check_read_only(sql, allow_files)
    timer = None
    expired = threading.Event()
    if timeout is not None:
        def interrupt() -> None:
            expired.set()
            con.interrupt()

        timer = threading.Timer(timeout, interrupt)
        timer.daemon = True
        timer.start()
    try:
        rel = con.execute(query, params) if params is not None else con.execute(query)
        columns = [d[0] for d in (rel.description or [])]
        return columns, rel.fetchall()
    except duckdb.InterruptException:
        if expired.is_set():
            raise QueryTimeout(f"query interrupted after its {timeout:g} s limit") from None
        raise
    finally:
        if timer is not None:
            timer.cancel()
