"""Deterministic stand-ins for model output, so tests can predict every byte.

Nothing here pretends to be language: replies are words drawn from a fixed list
by a generator seeded from (model, prompt, seed), and a "token" is a
whitespace-separated word. That is enough for a proxy to measure time to first
token, token counts and throughput, and for a test to recompute the expected
reply.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

WORDS = (
    "the model is warm and ready to answer every request quickly while cold "
    "loads wait for weights to stream from disk into memory so a prewarmer "
    "moves that cost ahead of demand by forecasting which model is asked for "
    "next keeping hot ones resident inside the budget"
).split()

EMBEDDING_DIM = 768
MIN_REPLY_TOKENS = 8
REPLY_TOKEN_SPREAD = 25


def count_tokens(text: str) -> int:
    """Prompt token count: whitespace words, the estimate every client can redo."""
    return len(text.split())


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def reply_tokens(model: str, prompt: str, seed: int | None = None, num_predict: int | None = None) -> list[str]:
    """The reply as a list of tokens; joined they give the full text.

    Without ``num_predict`` the length is 8..32 tokens, fixed by the inputs.
    The first token has no leading space, the others do, so streaming chunks
    concatenate to the non-streamed text.
    """
    s = _seed(model, prompt, seed)
    n = num_predict if num_predict is not None and num_predict > 0 else MIN_REPLY_TOKENS + s % REPLY_TOKEN_SPREAD
    rng = np.random.default_rng(s)
    picks = rng.integers(0, len(WORDS), size=n)
    return [(" " if i else "") + WORDS[int(k)] for i, k in enumerate(picks)]


def token_ids(text: str) -> list[int]:
    """Stable ids for Ollama's ``context`` field (a vocabulary of 32000, like llama 2)."""
    return [zlib.crc32(w.encode()) % 32000 for w in text.split()]


def embedding(model: str, text: str, normalize: bool = True) -> list[float]:
    """A fixed-dimension vector determined by (model, text).

    /api/embed and /v1/embeddings return unit vectors as Ollama does; the legacy
    /api/embeddings does not normalise.
    """
    v = np.random.default_rng(_seed("embed", model, text)).standard_normal(EMBEDDING_DIM)
    if normalize:
        v = v / np.linalg.norm(v)
    return [float(x) for x in v]
