"""What the emulator tells clients about a catalog model, and how big it is at a given context.

The catalog gives one size per model: the VRAM it holds at Ollama's default
context (``DEFAULT_NUM_CTX``), weights plus KV cache. To let a prewarmer estimate
the KV cache the way Ollama predicts it (2 x layers x kv_heads x head_dim x
num_ctx x 2 bytes, f16), each model gets a plausible llama-style architecture
picked by its parameter count: the one in its name (``:8b``), else read back
from the size with the catalog's own default rule (0.6 GB per billion
parameters + 0.5 GB). Then:

* ``/api/tags`` size (the file) = catalog size - KV cache at the default context;
* resident size at ``num_ctx`` = catalog size + kv_bytes_per_token x (num_ctx - default),
  never below the file size, so the catalog size is exact at the default context.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from prewarm.catalog import (
    BYTES_PER_BILLION_PARAMS,
    RUNTIME_OVERHEAD_BYTES,
    UNKNOWN_MODEL_BYTES,
    Catalog,
    default_entry,
)

DEFAULT_NUM_CTX = 4096
QUANTIZATION = "Q4_K_M"

# (billions of parameters, block_count, embedding_length, head_count, head_count_kv, context_length):
# the shapes of Qwen2.5-0.5B, Llama 3.2 1B/3B, Llama 3.1 8B, Qwen2.5 14B/32B and Llama 3.1 70B.
_ARCHS = (
    (0.5, 24, 896, 14, 2, 32768),
    (1.2, 16, 2048, 32, 8, 131072),
    (3.2, 28, 3072, 24, 8, 131072),
    (8.0, 32, 4096, 32, 8, 131072),
    (14.8, 48, 5120, 40, 8, 32768),
    (32.8, 64, 5120, 40, 8, 32768),
    (70.6, 80, 8192, 64, 8, 131072),
)


def normalize_name(name: str) -> str:
    """Ollama's name rule: a name without a tag means ``:latest``."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    size_bytes: int  # resident at DEFAULT_NUM_CTX
    load_seconds: float
    parameter_billions: float
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    context_length: int

    @property
    def kv_bytes_per_token(self) -> int:
        head_dim = self.embedding_length // self.head_count
        return 2 * self.block_count * self.head_count_kv * head_dim * 2

    @property
    def file_bytes(self) -> int:
        return max(self.size_bytes // 2, self.size_bytes - self.kv_bytes_per_token * DEFAULT_NUM_CTX)

    def size_at(self, num_ctx: int) -> int:
        return max(self.file_bytes, self.size_bytes + self.kv_bytes_per_token * (num_ctx - DEFAULT_NUM_CTX))

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"prewarm-emulator:{self.name}".encode()).hexdigest()

    @property
    def is_embedding(self) -> bool:
        return "embed" in self.name

    @property
    def family(self) -> str:
        return "bert" if self.is_embedding else "llama"

    def details(self) -> dict:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": f"{self.parameter_billions:.1f}B",
            "quantization_level": QUANTIZATION,
        }

    def model_info(self) -> dict:
        return {
            "general.architecture": "llama",
            "general.file_type": 15,
            "general.parameter_count": int(self.parameter_billions * 1e9),
            "general.quantization_version": 2,
            "llama.attention.head_count": self.head_count,
            "llama.attention.head_count_kv": self.head_count_kv,
            "llama.attention.layer_norm_rms_epsilon": 1e-05,
            "llama.block_count": self.block_count,
            "llama.context_length": self.context_length,
            "llama.embedding_length": self.embedding_length,
            "llama.rope.dimension_count": self.embedding_length // self.head_count,
            "llama.vocab_size": 128256,
        }

    def capabilities(self) -> list[str]:
        return ["embedding"] if self.is_embedding else ["completion"]


def parameter_billions(name: str, size_bytes: int) -> float:
    """From the name when it carries one (``:8b``), else read back from the size; both by the catalog's rule."""
    by_name = default_entry(name).size_bytes
    reference = by_name if by_name != UNKNOWN_MODEL_BYTES else size_bytes
    return max(0.05, (reference - RUNTIME_OVERHEAD_BYTES) / BYTES_PER_BILLION_PARAMS)


def spec_for(name: str, size_bytes: int, load_seconds: float) -> ModelSpec:
    params = parameter_billions(name, size_bytes)
    arch = min(_ARCHS, key=lambda a: abs(math.log(a[0] / params)))
    return ModelSpec(
        name=name,
        size_bytes=size_bytes,
        load_seconds=load_seconds,
        parameter_billions=round(params, 1) or 0.1,
        block_count=arch[1],
        embedding_length=arch[2],
        head_count=arch[3],
        head_count_kv=arch[4],
        context_length=arch[5],
    )


def specs_from_catalog(catalog: Catalog) -> dict[str, ModelSpec]:
    """One spec per catalog entry, keyed by the normalised name clients will ask for."""
    return {
        normalize_name(e.model): spec_for(normalize_name(e.model), e.size_bytes, e.load_seconds) for e in catalog
    }
