"""Lower bounds for what any Python proxy costs on this box: the floors bench/proxy_overhead.py --floor measures.

Two stand-ins for `prewarm serve`, each doing less than a proxy can get away with:

- `pipe`: a byte pipe on asyncio protocols, one upstream connection per client
  connection, no HTTP parsing, no logging. Nothing written in Python forwards a
  stream for less.
- `aiohttp`: an aiohttp server handing each request to one pooled ClientSession and
  writing the answer back chunk by chunk: the same stack prewarm's proxy is built
  on, without reading the body, logging a row or asking the prewarmer.

If `prewarm serve` costs about what `aiohttp` costs, the overhead is the stack's,
not prewarm's; if even `pipe` misses a throughput target, no Python proxy meets it
on that machine.

    python bench/proxy_floor.py pipe|aiohttp --upstream http://127.0.0.1:PORT --listen PORT
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web
from yarl import URL


class _UpstreamSide(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _ClientSide(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.upstream, _ = await loop.create_connection(lambda: _UpstreamSide(self.transport), self.host, self.port)
        except OSError:
            self.transport.close()
            return
        for data in self.pending:
            self.upstream.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def run_pipe(upstream: URL, port: int) -> None:
    loop = asyncio.get_running_loop()
    host, up_port = upstream.host or "127.0.0.1", upstream.port or 80
    server = await loop.create_server(lambda: _ClientSide(host, up_port), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def run_aiohttp(upstream: URL, port: int) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
    base = str(upstream).rstrip("/")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with session.request(request.method, base + request.raw_path, data=body, headers=headers) as up:
            resp = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers.get("Content-Type", "")})
            await resp.prepare(request)
            read = up.content.readany
            chunk = await read()
            while chunk:
                await resp.write(chunk)
                chunk = await read()
            await resp.write_eof()
            return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await session.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=("pipe", "aiohttp"))
    p.add_argument("--upstream", required=True, type=URL)
    p.add_argument("--listen", required=True, type=int, help="port on 127.0.0.1")
    args = p.parse_args()
    asyncio.run((run_pipe if args.kind == "pipe" else run_aiohttp)(args.upstream, args.listen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
