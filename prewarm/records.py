"""Records passed between parts. Plain dataclasses so they cross process and I/O boundaries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(slots=True)
class RequestEvent:
    """One proxied request: the row the proxy hands to the store (DESIGN.md `requests`)."""

    id: str
    ts_start: datetime
    ts_end: datetime | None
    model: str | None
    user_id: str | None
    api: str  # "ollama" | "openai" | "other"
    endpoint: str
    stream: bool
    status: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    load_ms: float | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None
    cold: bool | None = None
    upstream: str | None = None
    error: str | None = None


@dataclass(slots=True)
class CatalogEntry:
    """What it costs to hold and to load one model."""

    model: str
    size_bytes: int
    load_seconds: float
