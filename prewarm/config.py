"""One settings object for every part of prewarm.

Precedence, lowest first: built-in defaults (they run with no file), a TOML file
(``--config`` or ``PREWARM_CONFIG``), ``PREWARM_*`` environment variables, then
command-line flags. Only this module reads the config file, so every part sees
the same values.

Example file::

    upstream = "http://127.0.0.1:11434"
    listen = "127.0.0.1:11435"
    db = "data/prewarm.duckdb"
    vram_budget = "24GB"
    admin_token = "change-me"
    pins = ["llama3.1:8b"]

    [api_keys]            # API key (or "sha256:<hex>" of it) -> user id
    "sha256:9f86d0..." = "alice"

    [vllm.servers]        # one vLLM server per model, for upstream_kind = "vllm"
    "meta-llama/Llama-3.1-8B-Instruct" = "http://127.0.0.1:8001"

    [sglang.servers]      # one SGLang server per model, for upstream_kind = "sglang"
    "Qwen/Qwen2.5-7B-Instruct" = "http://127.0.0.1:30000"
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from prewarm.errors import ConfigError as ConfigError
from prewarm.units import parse_duration, parse_size

ENV_PREFIX = "PREWARM_"



def hash_api_key(key: str) -> str:
    """The only form in which an API key is kept: never the key itself."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class Settings:
    upstream: str = "http://127.0.0.1:11434"
    upstream_kind: str = "ollama"  # a name from prewarm.backends.registry
    listen: str = "127.0.0.1:11435"
    db: str = "data/prewarm.duckdb"
    models_dir: str = "models"
    catalog: str | None = None
    vram_budget: int | None = None  # bytes; None = what NVML or the upstream says
    vram_reserve: int = 512 * 10**6  # bytes kept free for CUDA contexts and fragmentation
    gpu_index: int | None = None  # None = all devices summed
    admin_token: str | None = field(default=None, repr=False)  # a logged Settings must not show it
    api_keys: dict[str, str] = field(default_factory=dict)  # sha256:<hex> -> user
    pins: list[str] = field(default_factory=list)
    # who a request is from: the first of these headers that is set (then the OpenAI body's user, then an API key)
    user_headers: list[str] = field(default_factory=lambda: ["X-Prewarm-User", "X-OpenWebUI-User-Id",
                                                             "X-OpenWebUI-User-Email"])
    manual_hold: float = 1800.0  # seconds a model loaded by hand or a hint is kept (unloaded by hand: kept out)
    max_body_bytes: int = 32 * 2**20
    request_timeout: float = 600.0  # seconds for one upstream request
    ps_refresh: float = 2.0  # seconds between /api/ps polls for the resident set
    room_wait: float = 120.0  # seconds a request waits for busy models to free VRAM before it goes anyway
    # connections and bodies (docs/reliability.md)
    idle_timeout: float = 60.0  # seconds a client connection may sit without a request (headers included)
    body_timeout: float = 60.0  # seconds a request body may take to arrive
    max_connections: int = 0  # client connections at once; 0 = derived from the open-file limit
    max_buffered_bytes: int = 256 * 2**20  # request bodies held in memory at once, all requests together
    shutdown_grace: float = 10.0  # seconds SIGTERM waits for requests in flight before cancelling them
    open_management_routes: bool = False  # off loopback: let Ollama's pull/push/create/copy/delete pass without the admin token
    model_state_ttl: float = 7 * 86400.0  # seconds after its last request that a model's per-model state is kept
    # SQL answered for users (POST /prewarm/sql, prewarm sql)
    sql_timeout: float = 30.0  # seconds before a query is interrupted
    sql_concurrency: int = 2  # user queries at once through the service
    # request log
    log_flush_interval: float = 1.0
    log_batch_rows: int = 1000
    log_queue_max: int = 100_000
    # forecasting and planning
    window: float = 300.0  # seconds
    horizon_windows: int = 12
    train_cron: str = "0 * * * *"
    keep_runs: int = 5
    plan_keep_alive: str = "-1"  # keep_alive the proxy sets on Ollama requests: residency is the planner's
    vram_cost: float = 0.0  # seconds of client waiting traded for one GB-hour held; 0: fewest cold starts
    recency_half_life: float = 6 * 3600.0  # seconds: the planner's decayed request counts (planner.HALF_LIFE_S)
    # vLLM sleep mode
    vllm_servers: dict[str, str] = field(default_factory=dict)  # model -> base URL
    vllm_sleep_level: int = 1
    # SGLang memory saver
    sglang_servers: dict[str, str] = field(default_factory=dict)  # model -> base URL

    def __post_init__(self) -> None:
        self.api_keys = {
            (k if k.startswith("sha256:") else hash_api_key(k)): v for k, v in self.api_keys.items()
        }

    @property
    def listen_host(self) -> str:
        return split_host_port(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return split_host_port(self.listen)[1]

    def user_for_api_key(self, key: str) -> str | None:
        return self.api_keys.get(hash_api_key(key))


def split_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"listen address must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


_SIZE_FIELDS = {"vram_budget", "vram_reserve", "max_body_bytes", "max_buffered_bytes"}
_DURATION_FIELDS = {"window", "request_timeout", "ps_refresh", "room_wait", "log_flush_interval", "idle_timeout",
                    "body_timeout", "shutdown_grace", "model_state_ttl", "sql_timeout", "manual_hold",
                    "recency_half_life"}


# A size given as a bare number below this is taken for a forgotten unit: `vram_budget = 16` meant 16 GB,
# not 16 bytes (0 stays allowed: it is never a typo for a size).
MIN_PLAIN_SIZE = 10**6
# What Ollama accepts as keep_alive: a number of seconds (negative: forever) or a Go duration.
_KEEP_ALIVE_RE = re.compile(r"-?\d+(\.\d+)?|-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")


def _coerce(name: str, value: Any, template: Any) -> Any:
    try:
        if value is None:
            return None
        if name in _SIZE_FIELDS:
            plain = isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().isdigit())
            size = parse_size(value.strip() if isinstance(value, str) else value)
            if plain and 0 < size < MIN_PLAIN_SIZE:
                raise ValueError(f"{size} bytes: give a unit, e.g. {value}GB (10^9 bytes) or {value}GiB")
            return size
        if name in _DURATION_FIELDS:
            return parse_duration(value)
        if isinstance(template, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(template, int):
            return int(value)
        if isinstance(template, float):
            return float(value)
        if isinstance(template, list):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return list(value)
        if isinstance(template, dict):
            if not isinstance(value, Mapping):
                raise ValueError(value)
            return {str(k): str(v) for k, v in value.items()}
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value for {name!r}: {value!r} ({exc})") from None


def _flatten_file(data: dict[str, Any]) -> dict[str, Any]:
    """Map the file's tables onto flat field names ([vllm] servers -> vllm_servers, [sglang] likewise)."""
    out = dict(data)
    for table in ("vllm", "sglang"):
        sub = out.pop(table, None)
        if isinstance(sub, dict):
            for k, v in sub.items():
                out[f"{table}_{k}"] = v
    return out


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from defaults, file, environment and overrides (None values are ignored)."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}

    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        for k, v in _flatten_file(data).items():
            if k not in known:
                raise ConfigError(f"unknown setting {k!r} in {p}")
            values[k] = v

    for name in known:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and name not in ("api_keys", "vllm_servers", "sglang_servers"):
            values[name] = raw

    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in known:
            raise ConfigError(f"unknown setting {k!r}")
        values[k] = v

    coerced = {k: _coerce(k, v, getattr(defaults, k)) for k, v in values.items()}
    settings = dataclasses.replace(defaults, **coerced)
    from prewarm.backends.registry import kind_names  # names only: no adapter is imported

    if settings.upstream_kind not in kind_names():
        raise ConfigError(f"upstream_kind must be one of {', '.join(kind_names())}, not {settings.upstream_kind!r}")
    split_host_port(settings.listen)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Refuse a setting no part could work with, naming it, before anything touches the upstream or a file."""
    if settings.admin_token is not None and not settings.admin_token.strip():
        raise ConfigError("admin_token is empty or only whitespace: set a real token or leave it unset")
    for name in ("window", "idle_timeout", "body_timeout", "sql_timeout", "request_timeout", "ps_refresh",
                 "log_flush_interval", "shutdown_grace", "model_state_ttl", "recency_half_life"):
        if not (getattr(settings, name) > 0 and math.isfinite(getattr(settings, name))):
            raise ConfigError(f"{name} must be more than 0 seconds, not {getattr(settings, name)!r}")
    if not (settings.vram_cost >= 0 and math.isfinite(settings.vram_cost)):
        raise ConfigError(f"vram_cost must be a number of seconds per GB-hour, 0 or more, not {settings.vram_cost!r}")
    if settings.room_wait < 0:
        raise ConfigError(f"room_wait must be 0 seconds or more, not {settings.room_wait!r}")
    for name in ("horizon_windows", "sql_concurrency", "log_batch_rows", "log_queue_max", "keep_runs"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name} must be at least 1, not {getattr(settings, name)!r}")
    if settings.max_connections < 0:
        raise ConfigError(f"max_connections must be 0 (from the open-file limit) or more, not {settings.max_connections}")
    if settings.max_body_bytes < 1 or settings.max_buffered_bytes < settings.max_body_bytes:
        raise ConfigError("max_buffered_bytes must be at least max_body_bytes (one request must fit)")
    if not _KEEP_ALIVE_RE.fullmatch(settings.plan_keep_alive.strip()):
        raise ConfigError(f"plan_keep_alive {settings.plan_keep_alive!r} is not a keep_alive Ollama accepts: a "
                          "duration (30m, 1h) or seconds; -1 means forever")
    url = urllib.parse.urlsplit(settings.upstream)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"upstream must be an http:// or https:// URL with a host, not {settings.upstream!r}")
    if settings.vllm_sleep_level not in (1, 2):
        raise ConfigError(f"vllm_sleep_level must be 1 or 2 (vLLM's sleep levels), not {settings.vllm_sleep_level}")
    if settings.upstream_kind == "vllm" and not settings.vllm_servers:
        raise ConfigError('upstream_kind = "vllm" needs [vllm.servers] in the config file (model = "http://host:port")')
    if settings.upstream_kind == "sglang" and not settings.sglang_servers:
        raise ConfigError('upstream_kind = "sglang" needs [sglang.servers] in the config file '
                          '(model = "http://host:port")')
    for table, servers in (("vllm.servers", settings.vllm_servers), ("sglang.servers", settings.sglang_servers)):
        for model, server in servers.items():
            parts = urllib.parse.urlsplit(server)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"[{table}] {model!r} must be an http:// or https:// URL, not {server!r}")
    if settings.train_cron != Settings.train_cron:
        from apscheduler.triggers.cron import CronTrigger  # only for a cron other than the default

        try:
            CronTrigger.from_crontab(settings.train_cron)
        except ValueError as exc:
            raise ConfigError(f"train_cron {settings.train_cron!r} is not a crontab line (5 fields): {exc}") from None
