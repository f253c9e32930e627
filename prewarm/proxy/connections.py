"""Client connections: how many at once, how long idle, how many body bytes in memory, quiet logs.

A proxy that anyone on the network can reach must not be exhausted by clients
that do nothing. aiohttp closes a connection that has sent no complete request
for `keepalive_timeout` seconds (counted from the connection's start since aiohttp 3.14.5, so silent
and slow-header connections go too); serve sets that to `idle_timeout`. What
aiohttp does not do is bound the number of connections: past the process's
open-file limit, `accept()` fails and nobody is answered, health checks included.
`ConnectionCap` keeps the count under a limit derived from that file limit. At
the limit a new connection first displaces the longest-idle one (nginx reuses
keep-alive connections the same way), so a flood of idle sockets cannot lock out
a real client; only when every connection is busy is the newcomer answered 503.

`BodyBudget` bounds the request bytes buffered at once over all requests (each one
is already bounded by max_body_bytes); beyond it a request is answered 503 with
Retry-After rather than buffered. `OneLinePerCause` turns aiohttp's and asyncio's
tracebacks for malformed requests into one line per cause per minute.
"""

from __future__ import annotations

import logging
import resource
import time
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

# File descriptors kept for everything that is not a client connection: the database and its WAL, the
# listening sockets, logs, the scheduler's worker process, NVML.
RESERVED_FDS = 64
MIN_CONNECTIONS = 16
BUSY_BODY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
             b"Retry-After: 1\r\nContent-Length: 63\r\n\r\n"
             b'{"error": "prewarm: too many connections open; try again soon"}')


def default_max_connections() -> int:
    """What the open-file limit allows: each busy client connection holds a second descriptor upstream."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(MIN_CONNECTIONS, (int(soft) - RESERVED_FDS) // 2)


def request_in_progress(handler: Any) -> bool | None:
    """Whether aiohttp's handler is serving a request now (None if this aiohttp does not say): the one place
    that reads its private flag."""
    return getattr(handler, "_request_in_progress", None)


class ConnectionCap:
    """Wraps a running aiohttp Server's connection_made so that at most `limit` client connections are open."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self.server = server
        self.limit = limit
        self.displaced = 0
        self.refused = 0
        self._inner = server.connection_made
        server.connection_made = self._connection_made  # type: ignore[method-assign]

    def _connection_made(self, handler: Any, transport: Any) -> None:
        self._inner(handler, transport)
        if len(self.server.connections) <= self.limit:
            return
        # A closed connection stays listed until its handler task ends: count and displace live ones only.
        live = [c for c in self.server.connections if c.transport is not None and not c.transport.is_closing()]
        if len(live) <= self.limit:
            return
        for other in live:  # oldest first: the dict keeps the order connections were made in
            if other is not handler and request_in_progress(other) is False:
                self.displaced += 1
                other.force_close()
                return
        self.refused += 1
        transport.write(BUSY_BODY)
        handler.force_close()


class BodyBudget:
    """Request body bytes buffered at once, over every request; `take` refuses what does not fit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.refused = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            self.refused += 1
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)


class OneLinePerCause(logging.Filter):
    """Let one record per (logger, message, exception type) through per `every_s`, without its traceback.

    A malformed request logs a traceback of ~600 bytes on aiohttp's server logger;
    a client sending a thousand of them must not write a thousand tracebacks.
    """

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[tuple[str, str, str], float] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        key = (record.name, str(record.msg)[:80], type(exc).__name__ if exc else "")
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self.suppressed += 1
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        if exc is not None:
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {str(exc)[:200]} (repeats within " \
                         f"{self.every_s:.0f} s not logged)"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_request_errors(every_s: float = 60.0) -> OneLinePerCause:
    """Install the one-line filter on the loggers that report bad requests and failed accepts."""
    flt = OneLinePerCause(every_s)
    for name in ("aiohttp.server", "aiohttp.access", "aiohttp.web", "asyncio"):
        logging.getLogger(name).addFilter(flt)
    return flt
