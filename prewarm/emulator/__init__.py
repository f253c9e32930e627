"""A built-in stand-in for Ollama (and for one vLLM sleep-mode or SGLang memory-saver server) with no GPU.

It exists so the proxy, the prewarmer, the demo and the benchmarks can run
anywhere: loads take the catalog's load_seconds (x time_scale), models hold the
catalog's size of an emulated VRAM budget, tokens stream at a fixed rate and the
text is deterministic. Every response carries ``X-Prewarm-Emulator: 1`` and
/api/version says ``-prewarm-emulator`` so it is never mistaken for a real backend.

Modules: ``server`` (make_app), ``ollama_api`` and ``openai_api`` (handlers),
``generation`` (one generation), ``runners`` (VRAM, keep_alive, eviction),
``modelinfo`` (sizes and architectures), ``text`` (deterministic output),
``openai_engine`` (the one-model OpenAI serving both of the next two share),
``vllm`` (make_vllm_app), ``sglang`` (make_sglang_app), ``main`` (``prewarm emulate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prewarm._faces import lazy_face

if TYPE_CHECKING:
    from prewarm.emulator.server import engine_of, make_app
    from prewarm.emulator.sglang import make_sglang_app
    from prewarm.emulator.vllm import make_vllm_app

_EXPORTS = {
    "engine_of": "prewarm.emulator.server",
    "make_app": "prewarm.emulator.server",
    "make_sglang_app": "prewarm.emulator.sglang",
    "make_vllm_app": "prewarm.emulator.vllm",
}
__all__ = [
    "engine_of",
    "make_app",
    "make_sglang_app",
    "make_vllm_app",
]
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
