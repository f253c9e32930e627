"""Every upstream kind, by name: the one place the CLI, the config and serve learn which kinds exist.

A kind is a name, a one-line description and a factory ``(settings, catalog) ->
Backend``. The built-in kinds are named by module path so that reading the list
(``prewarm serve --help``, validating a config) imports no adapter; ``register``
adds a kind at run time (a plugin, or a test). Adding an upstream kind is one
module under ``backends/`` and one line in ``BUILTIN``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prewarm.backends.base import Backend
    from prewarm.catalog import Catalog
    from prewarm.config import Settings

Factory = Callable[["Settings", "Catalog"], "Backend"]


@dataclass(frozen=True)
class BackendKind:
    name: str
    description: str
    factory: Factory | str  # a callable, or "module:function" imported on first use

    def make(self, settings: Settings, catalog: Catalog) -> Backend:
        factory = self.factory
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        return factory(settings, catalog)


BUILTIN = (
    BackendKind("ollama", "Ollama (/api/ps, load and unload through keep_alive)", "prewarm.backends.ollama:from_settings"),
    BackendKind("vllm", "one vLLM server per model, sleep mode ([vllm.servers])", "prewarm.backends.vllm:from_settings"),
    BackendKind("sglang", "one SGLang server per model, --enable-memory-saver ([sglang.servers])",
                "prewarm.backends.sglang:from_settings"),
    BackendKind("llamacpp", "llama.cpp's llama-server in router mode (--models-dir, /models/load and /models/unload)",
                "prewarm.backends.llamacpp:from_settings"),
    BackendKind("openai", "any OpenAI-compatible server (residency unknown)", "prewarm.backends.openai_compat:from_settings"),
)
_KINDS: dict[str, BackendKind] = {k.name: k for k in BUILTIN}


def register(kind: BackendKind) -> None:
    """Add (or replace) an upstream kind."""
    _KINDS[kind.name] = kind


def kind_names() -> list[str]:
    return list(_KINDS)


def get_kind(name: str) -> BackendKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown upstream kind {name!r}: one of {', '.join(_KINDS)}") from None


def make_backend(settings: Settings, catalog: Catalog) -> Backend:
    """The adapter for ``settings.upstream_kind``."""
    return get_kind(settings.upstream_kind).make(settings, catalog)
