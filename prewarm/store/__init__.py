"""DuckDB store: schema, buffered writer, read paths and the SQL sandbox (DESIGN.md, Store).

`Store` is the only writer of a database file; `read_query` reads one whether or not a
service holds it (through the service when one does); every users' statement passes
`check_read_only` first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prewarm._faces import lazy_face

if TYPE_CHECKING:
    from prewarm.store.discovery import (
        ServiceInfo,
        pid_alive,
        read_service_file,
        remove_service_file,
        service_file,
        write_service_file,
    )
    from prewarm.store.reader import ReadError, open_reader, read_query
    from prewarm.store.readonly import QueryTimeout, ReadOnlyError, check_read_only, jsonable
    from prewarm.store.schema import migrate
    from prewarm.store.writer import Store, StoreUnavailable, spill_path

_EXPORTS = {
    "QueryTimeout": "prewarm.store.readonly",
    "ReadError": "prewarm.store.reader",
    "ReadOnlyError": "prewarm.store.readonly",
    "ServiceInfo": "prewarm.store.discovery",
    "Store": "prewarm.store.writer",
    "StoreUnavailable": "prewarm.store.writer",
    "check_read_only": "prewarm.store.readonly",
    "jsonable": "prewarm.store.readonly",
    "migrate": "prewarm.store.schema",
    "open_reader": "prewarm.store.reader",
    "pid_alive": "prewarm.store.discovery",
    "read_query": "prewarm.store.reader",
    "read_service_file": "prewarm.store.discovery",
    "remove_service_file": "prewarm.store.discovery",
    "service_file": "prewarm.store.discovery",
    "spill_path": "prewarm.store.writer",
    "write_service_file": "prewarm.store.discovery",
}
__all__ = [
    "QueryTimeout",
    "ReadError",
    "ReadOnlyError",
    "ServiceInfo",
    "Store",
    "StoreUnavailable",
    "check_read_only",
    "jsonable",
    "migrate",
    "open_reader",
    "pid_alive",
    "read_query",
    "read_service_file",
    "remove_service_file",
    "service_file",
    "spill_path",
    "write_service_file",
]
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
