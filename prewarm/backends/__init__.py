"""Upstream kinds: the `Backend` protocol (the whole contract of a kind), the registry, one module per kind.

A new kind is one module here plus one `BackendKind` in `registry.BUILTIN` (or a call to
`register`): the CLI's choices and the config sections are read from the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prewarm._faces import lazy_face

if TYPE_CHECKING:
    from prewarm.backends.base import Backend, BackendError, Unsupported
    from prewarm.backends.llamacpp import LlamaCppBackend
    from prewarm.backends.ollama import OllamaBackend, canonical_name, keep_alive_value, runner_options
    from prewarm.backends.openai_compat import OpenAICompatBackend
    from prewarm.backends.registry import BackendKind, get_kind, kind_names, make_backend, register
    from prewarm.backends.sglang import SglangBackend
    from prewarm.backends.sizing import catalog_rows, estimate_size, kv_cache_bytes, load_ms_p50
    from prewarm.backends.vllm import VllmBackend

_EXPORTS = {
    "Backend": "prewarm.backends.base",
    "BackendError": "prewarm.backends.base",
    "BackendKind": "prewarm.backends.registry",
    "LlamaCppBackend": "prewarm.backends.llamacpp",
    "OllamaBackend": "prewarm.backends.ollama",
    "OpenAICompatBackend": "prewarm.backends.openai_compat",
    "SglangBackend": "prewarm.backends.sglang",
    "Unsupported": "prewarm.backends.base",
    "VllmBackend": "prewarm.backends.vllm",
    "canonical_name": "prewarm.backends.ollama",
    "catalog_rows": "prewarm.backends.sizing",
    "estimate_size": "prewarm.backends.sizing",
    "get_kind": "prewarm.backends.registry",
    "keep_alive_value": "prewarm.backends.ollama",
    "kind_names": "prewarm.backends.registry",
    "kv_cache_bytes": "prewarm.backends.sizing",
    "load_ms_p50": "prewarm.backends.sizing",
    "make_backend": "prewarm.backends.registry",
    "register": "prewarm.backends.registry",
    "runner_options": "prewarm.backends.ollama",
}
__all__ = [
    "Backend",
    "BackendError",
    "BackendKind",
    "LlamaCppBackend",
    "OllamaBackend",
    "OpenAICompatBackend",
    "SglangBackend",
    "Unsupported",
    "VllmBackend",
    "canonical_name",
    "catalog_rows",
    "estimate_size",
    "get_kind",
    "keep_alive_value",
    "kind_names",
    "kv_cache_bytes",
    "load_ms_p50",
    "make_backend",
    "register",
    "runner_options",
]
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
