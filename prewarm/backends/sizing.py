"""Model sizes and load times for the model_catalog table.

Sources, strongest first: the catalog CSV (the operator's word), the upstream's
own figure for a resident model (/api/ps size_vram), an estimate for a model that
is not resident made the way Ollama predicts it (file size + KV cache for the
context it will run with), then the catalog's documented default rule. Load times
are the median of what was measured: cold requests' load_ms and the prewarmer's
own timed loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from prewarm.catalog import Catalog

DEFAULT_NUM_CTX = 4096  # Ollama's default context when neither the request nor the Modelfile sets one

def kv_cache_bytes(model_info: Mapping[str, Any], num_ctx: int) -> int | None:
    """Ollama's KV-cache estimate, f16: 2 (K and V) x layers x kv_heads x head_dim x num_ctx x 2 bytes.

    None when /api/show's model_info lacks the architecture fields (e.g. a
    non-transformer or a format Ollama does not describe).
    """
    arch = model_info.get("general.architecture")
    if not arch:
        return None

    def field(name: str) -> int | None:
        v = model_info.get(f"{arch}.{name}")
        if isinstance(v, list):  # per-layer values (some architectures): take the largest
            v = max(v) if v else None
        return int(v) if isinstance(v, (int, float)) and v > 0 else None

    layers = field("block_count")
    heads = field("attention.head_count")
    kv_heads = field("attention.head_count_kv") or heads
    head_dim = field("attention.key_length")
    if head_dim is None:
        emb = field("embedding_length")
        head_dim = emb // heads if emb and heads else None
    if not (layers and kv_heads and head_dim):
        return None
    return 2 * layers * kv_heads * head_dim * num_ctx * 2


def estimate_size(file_bytes: int, model_info: Mapping[str, Any], num_ctx: int) -> int:
    """File size plus KV cache at num_ctx (the file alone when the architecture is unknown)."""
    return file_bytes + (kv_cache_bytes(model_info, num_ctx) or 0)


def load_ms_p50(df: pd.DataFrame | None) -> dict[str, float]:
    """model -> median load ms from a frame with columns model, load_ms_p50 (the result of store.queries.LOAD_MS)."""
    if df is None or df.empty:
        return {}
    return {str(m): float(ms) for m, ms in zip(df["model"].tolist(), df["load_ms_p50"].tolist(), strict=True)
            if pd.notna(ms)}


def catalog_rows(
    sizes: Mapping[str, int],
    size_source: Mapping[str, str],
    load_ms: Mapping[str, float],
    catalog: Catalog,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Rows for model_catalog (model, size_bytes, load_ms_p50, source, updated_at), catalog CSV winning."""
    now = now or datetime.now(UTC)
    rows = []
    for model in sorted(set(sizes) | set(load_ms) | {e.model for e in catalog}):
        if model in catalog:
            e = catalog.get(model)
            rows.append(dict(model=model, size_bytes=e.size_bytes, load_ms_p50=e.load_seconds * 1000.0,
                             source=f"catalog {catalog.source}", updated_at=now))
            continue
        if model in sizes:
            size, source = sizes[model], size_source.get(model, "upstream")
        else:
            size, source = catalog.get(model).size_bytes, "default rule"
        p50 = load_ms.get(model)
        if p50 is None:
            p50 = catalog.get(model).load_seconds * 1000.0
            source += ", load time by default rule"
        else:
            source += ", load time measured"
        rows.append(dict(model=model, size_bytes=int(size), load_ms_p50=float(p50), source=source, updated_at=now))
    return rows
