"""``prewarm emulate``: serve the Ollama emulator (or, with --vllm-model, one vLLM sleep-mode server; with
--sglang-model, one SGLang stand-in) until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from prewarm.catalog import Catalog, load_catalog, sample_catalog_path
from prewarm.emulator.modelinfo import normalize_name
from prewarm.errors import CommandError
from prewarm.records import CatalogEntry
from prewarm.units import format_size, parse_size

log = logging.getLogger("prewarm.emulator")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CommandError(f"--listen must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _entry(catalog: Catalog, model: str, flag: str) -> CatalogEntry:
    entry = catalog.entries.get(model) or catalog.entries.get(normalize_name(model))
    if entry is None:
        raise CommandError(f"{flag} {model!r} is not in the catalog {catalog.source}")
    return entry


def _vllm_app(catalog: Catalog, model: str, time_scale: float, tokens_per_second: float) -> web.Application:
    from prewarm.emulator.vllm import make_vllm_app

    entry = _entry(catalog, model, "--vllm-model")
    return make_vllm_app(model, entry.size_bytes, entry.load_seconds, time_scale, tokens_per_second=tokens_per_second)


def _sglang_app(catalog: Catalog, model: str, time_scale: float, tokens_per_second: float,
                cpu_backup: bool) -> web.Application:
    from prewarm.emulator.sglang import make_sglang_app

    entry = _entry(catalog, model, "--sglang-model")
    return make_sglang_app(model, entry.size_bytes, entry.load_seconds, time_scale, tokens_per_second, cpu_backup)


def build_app(args: argparse.Namespace) -> tuple[web.Application, str]:
    catalog = load_catalog(args.catalog or sample_catalog_path())
    time_scale = float(args.time_scale)
    if time_scale < 0:
        raise CommandError(f"--time-scale must be >= 0, got {time_scale}")
    tps = float(getattr(args, "tokens_per_second", 200.0))
    if tps <= 0:
        raise CommandError(f"--tokens-per-second must be > 0, got {tps}")
    sglang_model = getattr(args, "sglang_model", None)
    if sglang_model and getattr(args, "vllm_model", None):
        raise CommandError("--vllm-model and --sglang-model each make one server: give one of them")
    if sglang_model:
        cpu_backup = bool(getattr(args, "sglang_cpu_backup", False))
        return (_sglang_app(catalog, sglang_model, time_scale, tps, cpu_backup),
                f"SGLang stand-in (memory saver{', CPU weight backup' if cpu_backup else ''}) of {sglang_model}")
    vllm_model = getattr(args, "vllm_model", None)
    if vllm_model:
        return _vllm_app(catalog, vllm_model, time_scale, tps), f"vLLM sleep-mode emulation of {vllm_model}"
    try:
        vram = parse_size(args.vram)
    except ValueError as exc:
        raise CommandError(f"--vram: {exc}") from None
    if vram <= 0:
        raise CommandError("--vram must be positive")
    from prewarm.emulator.server import make_app

    return (
        make_app(catalog, vram, time_scale, tps),
        f"Ollama emulation: {len(catalog)} models from {catalog.source}, {format_size(vram)} emulated VRAM",
    )


async def _serve(app: web.Application, host: str, port: int, what: str, time_scale: float) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0] if runner.addresses else (host, port)
    log.warning(
        "prewarm EMULATOR (no GPU, simulated models; not a real backend) listening on http://%s:%s - %s, "
        "load times x %g",
        bound[0],
        bound[1],
        what,
        time_scale,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        log.warning("prewarm emulator stopped")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host, port = parse_listen(args.listen)
    app, what = build_app(args)
    asyncio.run(_serve(app, host, port, what, float(args.time_scale)))
    return 0
