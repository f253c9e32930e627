"""`prewarm config --example`: every setting with its default and meaning, as a TOML file one can edit.

The meanings live here, one per Settings field; a test keeps the two in step, so a
new setting without a line here fails CI rather than going undocumented.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from prewarm.config import ENV_PREFIX, Settings

MEANINGS: dict[str, str] = {
    "upstream": "base URL of the server prewarm sits in front of",
    "upstream_kind": "what that server is: ollama, vllm, sglang, llamacpp or openai (prewarm serve --help lists them)",
    "listen": "HOST:PORT the proxy listens on; off loopback, admin_token is required",
    "db": "the DuckDB file: the request log, forecasts, actions, catalog",
    "models_dir": "where trained forecaster runs are kept (one folder per run)",
    "catalog": "CSV model,size_bytes,load_seconds overriding measured sizes and load times",
    "vram_budget": "the most VRAM the prewarmer fills (16GB = 16e9 bytes, 16GiB = 16*2^30); unset: NVML or the upstream",
    "vram_reserve": "VRAM kept free beside the budget NVML reports (CUDA contexts, fragmentation)",
    "gpu_index": "which GPU NVML reads; unset: all of them summed",
    "admin_token": "bearer token for /prewarm/*, /metrics and Ollama's management routes off loopback",
    "api_keys": "table: API key (or sha256:<hex> of it) -> user id, for requests that carry a key",
    "pins": "models always kept resident",
    "user_headers": "headers naming the user, first set one wins (Open WebUI sends X-OpenWebUI-User-* when "
                    "ENABLE_FORWARD_USER_INFO_HEADERS=true)",
    "manual_hold": "seconds a model loaded by hand (/prewarm/load) or by a hint is kept before a plan may unload it; "
                   "one unloaded by hand (/prewarm/unload) is not prefetched back for as long",
    "max_body_bytes": "largest request body the proxy reads",
    "request_timeout": "seconds the proxy waits for each next chunk from the upstream (a model load included)",
    "ps_refresh": "seconds between polls of what the upstream holds",
    "room_wait": "seconds a request waits for busy models to free VRAM before it is forwarded anyway",
    "idle_timeout": "seconds a client connection may stay without a complete request",
    "body_timeout": "seconds a request body may take to arrive",
    "max_connections": "client connections at once (the longest-idle one gives way first); 0: from the open-file limit",
    "max_buffered_bytes": "request body bytes held in memory at once, over all requests",
    "shutdown_grace": "seconds SIGTERM lets requests in flight finish",
    "open_management_routes": "off loopback, let Ollama's pull/push/create/copy/delete pass without the admin token",
    "model_state_ttl": "seconds a model's per-model state outlives its last request",
    "sql_timeout": "seconds before a user's SQL query is interrupted",
    "sql_concurrency": "users' SQL queries at once through the running service",
    "log_flush_interval": "seconds between writes of the request log",
    "log_batch_rows": "rows that make the writer write before the interval is up",
    "log_queue_max": "rows the request log holds in memory before it drops (and counts) them",
    "window": "forecast and plan window",
    "horizon_windows": "windows the forecaster looks ahead",
    "train_cron": "when the forecaster is retrained (crontab line)",
    "keep_runs": "trained runs kept in models_dir",
    "plan_keep_alive": "keep_alive set on Ollama requests, so Ollama's timer does not undo the plan (-1: until "
                       "prewarm unloads them; a client's keep_alive 0 still unloads)",
    "vram_cost": "seconds of client waiting you would trade for one GB-hour of VRAM held (0: fewest cold starts)",
    "recency_half_life": "half-life of the planner's decayed request counts, its rate where no forecast speaks "
                         "(docs/replay.md, decision procedure)",
    "vllm_servers": "table [vllm.servers]: model -> base URL of its vLLM server",
    "vllm_sleep_level": "vLLM sleep level used to unload: 1 keeps weights in CPU memory, 2 drops them",
    "sglang_servers": "table [sglang.servers]: model -> base URL of its SGLang server (--enable-memory-saver)",
}
_SIZES = {"vram_budget", "vram_reserve", "max_body_bytes", "max_buffered_bytes"}


def example() -> str:
    """The whole settings file, every setting commented out at its default."""
    out = ["# prewarm settings: every one with its default. Uncomment to change; PREWARM_<NAME> in the",
           f"# environment ({ENV_PREFIX}VRAM_BUDGET=24GB) and command-line flags override this file.", ""]
    defaults = Settings()
    tables: list[str] = []
    for f in dataclasses.fields(Settings):
        value = getattr(defaults, f.name)
        meaning = MEANINGS[f.name]
        if f.name == "vllm_servers":
            tables += [f"# {meaning}", "# [vllm.servers]", '# "meta-llama/Llama-3.1-8B-Instruct" = "http://127.0.0.1:8001"', ""]
            continue
        if f.name == "sglang_servers":
            tables += [f"# {meaning}", "# [sglang.servers]", '# "Qwen/Qwen2.5-7B-Instruct" = "http://127.0.0.1:30000"', ""]
            continue
        if f.name == "api_keys":
            tables += [f"# {meaning}", "# [api_keys]", '# "sha256:9f86d0..." = "alice"', ""]
            continue
        key = "vllm.sleep_level" if f.name == "vllm_sleep_level" else f.name
        out.append(f"# {meaning}")
        out.append(f"# {key} = {_toml(f.name, value)}")
        out.append("")
    return "\n".join(out + tables).rstrip() + "\n"


def _toml(name: str, value: Any) -> str:
    if value is None:
        return "(unset by default)"
    if name in _SIZES and isinstance(value, int):
        for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("GB", 10**9), ("MB", 10**6)):
            if value and value % factor == 0:
                return json.dumps(f"{value // factor}{unit}")
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(example())
    return 0
