"""`<db>.service.json`: how a reader finds the service that holds a database file.

DuckDB lets one process open a file (a second one fails to lock it, read-only
included), so while `prewarm serve` runs, `prewarm sql` asks it over HTTP. serve
writes this file on start and removes it on exit; a stale one (crashed service)
is recognised by its pid no longer running.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServiceInfo:
    url: str
    pid: int
    admin_token_required: bool = False


def service_file(db_path: str | os.PathLike[str]) -> Path:
    return Path(f"{db_path}.service.json")


def write_service_file(db_path: str, info: ServiceInfo) -> Path:
    path = service_file(db_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({"url": info.url, "pid": info.pid, "admin_token_required": info.admin_token_required}),
        encoding="utf-8",
    )
    os.replace(tmp, path)
    return path


def remove_service_file(db_path: str, pid: int) -> None:
    """Remove the file only if it is ours (another serve may have replaced it)."""
    info = read_service_file(db_path)
    if info is not None and info.pid == pid:
        service_file(db_path).unlink(missing_ok=True)


def read_service_file(db_path: str) -> ServiceInfo | None:
    try:
        data = json.loads(service_file(db_path).read_text(encoding="utf-8"))
        return ServiceInfo(str(data["url"]), int(data["pid"]), bool(data.get("admin_token_required", False)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
