"""Read the database from a second process, whether or not `prewarm serve` holds it.

DuckDB lets only one process open a file; while serve runs, a second open fails
("Could not set lock on file"), read-only included. So a reader first tries the
file read-only, and when it is locked finds the service through
`<db>.service.json` and sends the query to its POST /prewarm/sql, which runs it
read-only on its own cursor. Both paths refuse anything but one read-only
statement and return JSON-safe values, so output does not depend on the path.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

import duckdb

from prewarm.config import Settings
from prewarm.errors import ReadError as ReadError
from prewarm.errors import one_line
from prewarm.store.discovery import ServiceInfo, pid_alive, read_service_file
from prewarm.store.readonly import QueryTimeout, check_read_only, execute_read, jsonable, sandbox_config

SERVICE_TIMEOUT_S = 30.0



class Reader(Protocol):
    via: str  # "file" or the service URL

    def query(self, sql: str) -> tuple[list[str], list[list[Any]]]: ...

    def close(self) -> None: ...


class FileReader:
    """The file opened read-only and sandboxed (readonly.SANDBOX_CONFIG; files only with allow_files)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, allow_files: bool = False,
                 timeout: float | None = None) -> None:
        self.con = con
        self.via = f"file {path}"
        self.allow_files = allow_files
        self.timeout = timeout

    def query(self, sql: str) -> tuple[list[str], list[list[Any]]]:
        try:
            columns, rows = execute_read(self.con, sql, allow_files=self.allow_files, timeout=self.timeout)
        except (duckdb.Error, QueryTimeout) as exc:
            raise ReadError(one_line(exc)) from None
        return columns, [[jsonable(v) for v in row] for row in rows]

    def close(self) -> None:
        self.con.close()


class ServiceReader:
    def __init__(self, info: ServiceInfo, admin_token: str | None) -> None:
        self.info = info
        self.via = f"service {info.url} (pid {info.pid})"
        self._token = admin_token
        # Never route loopback admin calls through an http_proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.info.url + path, data=data, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=SERVICE_TIMEOUT_S) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ReadError(_service_error(exc)) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ReadError(f"the service at {self.info.url} did not answer: {exc}") from None

    def query(self, sql: str) -> tuple[list[str], list[list[Any]]]:
        body = self._call("POST", "/prewarm/sql", {"sql": sql})
        return list(body["columns"]), [list(r) for r in body["rows"]]

    def health(self) -> dict[str, Any]:
        health: dict[str, Any] = self._call("GET", "/prewarm/health")
        return health

    def close(self) -> None:
        pass


def open_reader(settings: Settings, allow_files: bool = False) -> Reader:
    """The file read-only when free, else the service that holds it (which never reads files for SQL)."""
    path = settings.db
    if not Path(path).exists():
        raise ReadError(f"no database at {path} (run `prewarm serve` first, or pass --db; "
                        "`prewarm demo --workdir DIR` leaves DIR/demo.duckdb)")
    try:
        con = duckdb.connect(path, read_only=True, config=sandbox_config(allow_files))
        return FileReader(con, path, allow_files, settings.sql_timeout)
    except duckdb.Error as exc:
        locked = "lock" in str(exc).lower()
        reason = one_line(exc)
    info = read_service_file(path)
    if info is not None and pid_alive(info.pid):
        if allow_files:
            raise ReadError(f"--allow-files reads through the database file, which the service at {info.url} "
                            "holds; the service never reads files for SQL (stop it, or drop --allow-files)")
        if info.admin_token_required and not settings.admin_token:
            raise ReadError(f"the service at {info.url} needs admin_token (config file or PREWARM_ADMIN_TOKEN)")
        return ServiceReader(info, settings.admin_token)
    if locked:
        raise ReadError(f"{path} is locked by another process that is not a running prewarm serve: {reason}")
    raise ReadError(f"cannot open {path}: {reason}")


def read_query(settings: Settings, sql: str, allow_files: bool = False) -> tuple[list[str], list[list[Any]]]:
    check_read_only(sql, allow_files)  # refuse before touching the file or the service
    reader = open_reader(settings, allow_files)
    try:
        return reader.query(sql)
    finally:
        reader.close()


def _service_error(exc: urllib.error.HTTPError) -> str:
    try:
        msg = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError, OSError):
        msg = None
    return str(msg) if msg else f"the service answered HTTP {exc.code}"
