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
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from prewarm.units import parse_duration, parse_size

ENV_PREFIX = "PREWARM_"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


def hash_api_key(key: str) -> str:
    """The only form in which an API key is kept: never the key itself."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class Settings:
    upstream: str = "http://127.0.0.1:11434"
    upstream_kind: str = "ollama"  # ollama | vllm | openai
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
    max_body_bytes: int = 32 * 2**20
    request_timeout: float = 600.0  # seconds for one upstream request
    ps_refresh: float = 2.0  # seconds between /api/ps polls for the resident set
    room_wait: float = 120.0  # seconds a request waits for busy models to free VRAM before it goes anyway
    # request log
    log_flush_interval: float = 1.0
    log_batch_rows: int = 1000
    log_queue_max: int = 100_000
    # forecasting and planning
    window: float = 300.0  # seconds
    horizon_windows: int = 12
    train_cron: str = "0 * * * *"
    keep_runs: int = 5
    plan_keep_alive: str = "-1"  # keep_alive the proxy sets for planned-resident models
    # vLLM sleep mode
    vllm_servers: dict[str, str] = field(default_factory=dict)  # model -> base URL
    vllm_sleep_level: int = 1

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


_SIZE_FIELDS = {"vram_budget", "vram_reserve", "max_body_bytes"}
_DURATION_FIELDS = {"window", "request_timeout", "ps_refresh", "room_wait", "log_flush_interval"}


def _coerce(name: str, value: Any, template: Any) -> Any:
    try:
        if value is None:
            return None
        if name in _SIZE_FIELDS:
            return parse_size(value)
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
    """Map the file's tables onto flat field names ([vllm] servers -> vllm_servers)."""
    out = dict(data)
    vllm = out.pop("vllm", None)
    if isinstance(vllm, dict):
        for k, v in vllm.items():
            out[f"vllm_{k}"] = v
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
        if raw is not None and name not in ("api_keys", "vllm_servers"):
            values[name] = raw

    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in known:
            raise ConfigError(f"unknown setting {k!r}")
        values[k] = v

    coerced = {k: _coerce(k, v, getattr(defaults, k)) for k, v in values.items()}
    settings = dataclasses.replace(defaults, **coerced)
    if settings.upstream_kind not in ("ollama", "vllm", "openai"):
        raise ConfigError(f"upstream_kind must be ollama, vllm or openai, not {settings.upstream_kind!r}")
    split_host_port(settings.listen)
    return settings
