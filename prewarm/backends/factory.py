"""Pick the backend adapter for the configured upstream kind."""

from __future__ import annotations

from prewarm.backends.base import Backend
from prewarm.backends.ollama import OllamaBackend
from prewarm.backends.openai_compat import OpenAICompatBackend
from prewarm.backends.vllm import VllmBackend
from prewarm.catalog import Catalog
from prewarm.config import Settings


def make_backend(settings: Settings, catalog: Catalog) -> Backend:
    if settings.upstream_kind == "vllm":
        return VllmBackend(settings.vllm_servers, catalog, settings.vllm_sleep_level, settings.request_timeout)
    if settings.upstream_kind == "openai":
        return OpenAICompatBackend(settings.upstream, catalog, settings.request_timeout)
    return OllamaBackend(settings.upstream, catalog, settings.request_timeout)
