"""The one error shape of every admin route: {"error": "..."} with the status."""

from __future__ import annotations

from aiohttp import web


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
