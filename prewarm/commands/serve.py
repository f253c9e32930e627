"""`prewarm serve`: settings, store, residency, proxy app, discovery file, clean shutdown.

Shutdown order matters for "nothing already logged is lost" and "no request goes
unanswered": stop listening; keep the open connections while requests are in
flight (up to `shutdown_grace`), answering each new one with `Connection: close`
so that no client sends on a connection about to close; then close what is left
(cancelling, and logging as 499, what still runs), stop the background parts,
flush the store, and only then give the database file back.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from prewarm.admin import check_admin_token, make_service_app
from prewarm.backends.registry import make_backend
from prewarm.catalog import Catalog, load_catalog
from prewarm.config import Settings, load_settings
from prewarm.errors import CommandError
from prewarm.prewarmer import Prewarmer
from prewarm.proxy.app import DRAIN_KEY, make_upstream_session
from prewarm.proxy.connections import (
    ConnectionCap,
    default_max_connections,
    quiet_request_errors,
    request_in_progress,
)
from prewarm.store.discovery import ServiceInfo, pid_alive, read_service_file, remove_service_file, write_service_file
from prewarm.store.writer import Store

if TYPE_CHECKING:
    import pandas as pd

    from prewarm.scheduler import ForecastScheduler

log = logging.getLogger("prewarm.commands.serve")

# While stopping: the connections are closed once no request has run for this long (a client between two
# requests of a burst gets its next answer, with Connection: close, rather than a reset).
DRAIN_QUIET_S = 0.5


Part = Callable[[web.Application], AsyncIterator[None]]


@dataclass
class Wiring:
    """What the parts beyond the plain proxy add to serve: the prewarmer (the proxy's hooks too), the scheduler,
    and their lifecycles as aiohttp cleanup contexts (started in order before the port opens, stopped in
    reverse once the last request is done, before the store is flushed)."""

    prewarmer: Prewarmer
    scheduler: ForecastScheduler | None = None
    parts: list[Part] = field(default_factory=list)


def build_wiring(
    settings: Settings,
    store: Store,
    schedule: bool,
    catalog: Catalog | None = None,
) -> Wiring:
    """The prewarmer (hooks, /prewarm/* routes, /metrics) and, unless `schedule` is off, the scheduler.

    The prewarmer is always there, because it is what keeps client-triggered loads
    inside the budget; `--no-schedule` only stops the forecasts and planned loads.
    Its residency tracker polls through the backend, which knows how each kind of
    upstream tells what is resident: /api/ps, vLLM's /is_sleeping per server, or
    nothing at all for a plain OpenAI-compatible server (cold is then unknown).
    """
    catalog = catalog if catalog is not None else load_catalog(settings.catalog)
    pw = Prewarmer(settings, make_backend(settings, catalog), store, catalog=catalog)

    async def prewarmer_part(app: web.Application) -> AsyncIterator[None]:
        await pw.start()
        yield
        await pw.stop()

    wiring = Wiring(prewarmer=pw, parts=[prewarmer_part])
    if schedule:
        from prewarm.scheduler import ForecastScheduler

        async def plan_from(forecasts: pd.DataFrame) -> None:
            if forecasts.empty:
                log.info("forecast: no model has a forecast yet; nothing to plan")
                return
            await pw.apply_plan(forecasts)

        sched = ForecastScheduler(settings, store, on_forecast=plan_from)

        async def schedule_part(app: web.Application) -> AsyncIterator[None]:
            await asyncio.to_thread(sched.load_latest)
            sched.start()
            # A model from an earlier run can plan now rather than a window from now.
            first = asyncio.create_task(sched.forecast_now())
            yield
            first.cancel()
            await sched.stop()

        wiring.scheduler = sched
        wiring.parts.append(schedule_part)
    return wiring



async def drain(runner: web.AppRunner, app: web.Application, grace: float) -> None:
    """Stop listening, answer what comes on open connections with Connection: close, until quiet or `grace`."""
    app[DRAIN_KEY].on = True
    for site in list(runner.sites):
        await site.stop()
    server = runner.server
    if server is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    quiet_since = loop.time()
    seen = server.requests_count
    while loop.time() < deadline and server.connections:
        busy = any(request_in_progress(c) for c in server.connections)
        if busy or server.requests_count != seen:
            seen, quiet_since = server.requests_count, loop.time()
        elif loop.time() - quiet_since >= DRAIN_QUIET_S:
            break
        await asyncio.sleep(0.02)


def service_host(listen_host: str) -> str:
    """Where a reader on this machine reaches the service: loopback behind a wildcard bind, else the address
    bound (a service on one interface only does not answer on 127.0.0.1)."""
    if listen_host in ("0.0.0.0", "", "*"):
        return "127.0.0.1"
    if listen_host == "::":
        return "[::1]"
    return f"[{listen_host}]" if ":" in listen_host else listen_host


def run(args: argparse.Namespace) -> int:
    overrides = {
        "upstream": args.upstream,
        "upstream_kind": args.upstream_kind,
        "listen": args.listen,
        "db": args.db,
        "vram_budget": args.vram_budget,
        "catalog": args.catalog,
        "vram_cost": args.vram_cost,
    }
    settings = load_settings(args.config, overrides)
    check_admin_token(settings)
    running = read_service_file(settings.db)
    if running is not None and running.pid != os.getpid() and pid_alive(running.pid):
        # Two services on one file: the second could only spill, and readers would find the wrong one.
        raise CommandError(f"{settings.db} is already served by pid {running.pid} at {running.url}")
    catalog = load_catalog(settings.catalog)  # a bad catalog is a one-line error before the database file exists
    # The port before anything else: a busy port is a one-line error, with no database file left behind.
    sock = bind_listening_socket(settings.listen_host, settings.listen_port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(settings, schedule=not args.no_schedule, sock=sock, catalog=catalog))
    finally:
        sock.close()
    return 0


def bind_listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (not yet listening: the server starts that once everything is up)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


async def serve(settings: Settings, schedule: bool = True, sock: socket.socket | None = None,
                catalog: Catalog | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down without losing a logged row (on `sock` when given)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    store = Store(settings.db, settings)
    await asyncio.to_thread(store.open)
    session = make_upstream_session(settings)
    runner: web.AppRunner | None = None
    try:
        wiring = build_wiring(settings, store, schedule, catalog)
        app = make_service_app(settings, store, wiring.prewarmer, wiring.prewarmer, wiring.scheduler,
                               session=session)
        app.cleanup_ctx.extend(wiring.parts)
        # keepalive_timeout counts from a connection's start too: silent and slow-header clients are closed.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                               shutdown_timeout=settings.shutdown_grace, keepalive_timeout=settings.idle_timeout)
        # Everything is up before the port opens (setup runs the parts): a client that sees the port sees the
        # whole service.
        await runner.setup()
        assert runner.server is not None
        cap = ConnectionCap(runner.server, settings.max_connections or default_max_connections())
        quiet_request_errors()
        site: web.BaseSite = (web.SockSite(runner, sock) if sock is not None
                              else web.TCPSite(runner, settings.listen_host, settings.listen_port))
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://{service_host(settings.listen_host)}:{port}"
        write_service_file(settings.db, ServiceInfo(url, os.getpid(), bool(settings.admin_token)))
        print(
            f"prewarm serve: proxy on {settings.listen_host}:{port} -> {settings.upstream} "
            f"({settings.upstream_kind}); request log {settings.db}",
            file=sys.stdout,
            flush=True,
        )
        log.info("accepting at most %d client connections at once", cap.limit)
        await stop.wait()
        log.info("stopping: finishing requests in flight, then flushing the request log")
        await drain(runner, app, settings.shutdown_grace)
    finally:
        if runner is not None:
            try:
                await runner.cleanup()  # the parts stop here, in reverse, each even if another failed
            except Exception:
                log.exception("stopping a part of the service failed")
        await session.close()
        await store.close()
        remove_service_file(settings.db, os.getpid())
        c = store.counters
        log.info("request log: %d written, %d spilled, %d dropped", c["written"], c["spilled"], c["dropped"])
