"""A tiny random-weight llama model in GGUF, written at test time.

A real llama.cpp server needs a real model file, and any published one is far too
big for a test. llama.cpp's own GGUF writer (the `gguf` package) makes one of a few
hundred kilobytes that loads in milliseconds and generates (random) text on a CPU,
so the proxy can be tested against a real OpenAI-compatible server in CI.

The vocabulary is SentencePiece-style ("llama" tokenizer): <unk>, <s>, </s>, the
256 byte-fallback tokens llama.cpp requires for SPM vocabularies, then a few word
pieces. The output rows of the control and byte tokens are zero, so under greedy
sampling (temperature 0) the model practically always picks a word piece: the
text decodes cleanly and the reply is never cut short by an end-of-sequence token.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

WORDS = (
    "the cat dog sat on a mat warm cold model load fast slow proxy cache token "
    "red green blue one two three hello world yes no up down left right"
).split()

N_EMBD = 32
N_HEAD = 4
N_HEAD_KV = 2
N_LAYER = 2
N_CTX_TRAIN = 512

UNK, BOS, EOS = 0, 1, 2


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces = ["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\u2581" + w for w in WORDS]
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    # Letters cover any ASCII text (the rest falls back to bytes); scores only rank merges.
    scores = [0.0] * (3 + 256) + [float(len(p)) for p in pieces]
    return tokens, scores, [int(t) for t in types]


def write_tiny_llama(path: Path, seed: int = 0, name: str = "tiny-llama", n_embd: int = N_EMBD,
                     n_layer: int = N_LAYER) -> Path:
    """Write a llama GGUF with random f32 weights to `path` and return it: 2 layers, 32 wide by default.

    Wider and deeper ones (bench/llama_server.py's) take real time to load: the
    weights grow as layers x width squared, the vocabulary stays the same.
    """
    rng = np.random.default_rng(seed)
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)
    n_ff = 2 * n_embd
    head_dim = n_embd // N_HEAD
    n_embd_kv = head_dim * N_HEAD_KV

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(UNK)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)

    def t(name: str, *shape: int, scale: float = 0.2) -> None:
        w.add_tensor(name, rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))

    def ones(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    # numpy shapes are (rows, cols); GGUF stores them reversed, as llama.cpp expects.
    t("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        ones(f"blk.{i}.attn_norm.weight", n_embd)
        t(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        t(f"blk.{i}.attn_k.weight", n_embd_kv, n_embd)
        t(f"blk.{i}.attn_v.weight", n_embd_kv, n_embd)
        t(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        ones(f"blk.{i}.ffn_norm.weight", n_embd)
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    ones("output_norm.weight", n_embd)
    output = rng.standard_normal((n_vocab, n_embd), dtype=np.float32)
    output[: 3 + 256] = 0.0  # control and byte tokens never beat a word piece under greedy sampling
    w.add_tensor("output.weight", output)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
