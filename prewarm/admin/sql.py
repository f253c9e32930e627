"""POST /prewarm/sql: one read-only statement against the live database, bounded in size, time and number."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from prewarm.admin.errors import error
from prewarm.config import Settings
from prewarm.errors import one_line
from prewarm.store.readonly import QueryTimeout, ReadOnlyError, check_read_only, jsonable
from prewarm.store.writer import Store, StoreUnavailable

MAX_SQL_BYTES = 1 << 20


def sql_route(settings: Settings, store: Store) -> web.RouteDef:
    slots = asyncio.Semaphore(settings.sql_concurrency)

    async def sql(request: web.Request) -> web.Response:
        raw = await request.content.read(MAX_SQL_BYTES + 1)
        if len(raw) > MAX_SQL_BYTES:
            return error(413, "SQL text too long")
        try:
            body: Any = json.loads(raw or b"null")
        except (ValueError, RecursionError):
            return error(400, 'body must be JSON {"sql": "..."}')
        if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
            return error(400, 'body must be JSON {"sql": "..."}')
        try:
            check_read_only(body["sql"])  # refused before it waits for a slot or a flush
            async with asyncio.timeout(settings.sql_timeout):
                await slots.acquire()
        except ReadOnlyError as exc:
            return error(400, str(exc))
        except TimeoutError:
            return error(503, f"{settings.sql_concurrency} queries are already running; try again later")
        try:
            await store.flush(timeout=settings.sql_timeout)  # read your writes: rows accepted before it are in
            columns, rows = await store.query(body["sql"], timeout=settings.sql_timeout)
        except ReadOnlyError as exc:
            return error(400, str(exc))
        except QueryTimeout as exc:
            return error(408, str(exc))
        except StoreUnavailable as exc:
            return error(503, str(exc))
        except Exception as exc:  # a DuckDB error in the user's SQL (unknown column...)
            return error(400, one_line(exc))
        finally:
            slots.release()
        payload = {"columns": columns, "rows": [[jsonable(v) for v in row] for row in rows]}
        return web.json_response(payload, dumps=lambda o: json.dumps(o, allow_nan=False))

    return web.post("/prewarm/sql", sql)
