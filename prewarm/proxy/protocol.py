"""What the proxy knows about the Ollama and OpenAI wire formats.

Kept apart from the HTTP plumbing so the rules (which endpoints name a model, which
user a request belongs to, where the token counts hide in a response, what an error
looks like) are plain functions that tests check without a server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prewarm.config import Settings

# Endpoints whose JSON body names a model. The value is the `stream` default when the
# body does not say: Ollama streams generate/chat unless told not to, OpenAI does not.
MODEL_ENDPOINTS: dict[str, bool] = {
    "/api/generate": True,
    "/api/chat": True,
    "/api/embed": False,
    "/api/embeddings": False,
    "/api/show": False,
    "/v1/chat/completions": False,
    "/v1/completions": False,
    "/v1/embeddings": False,
    "/v1/responses": False,  # OpenAI's Responses API (Ollama, vLLM and llama.cpp's server answer it too)
    "/v1/messages": False,  # Anthropic's Messages API (Ollama and llama.cpp's server answer it)
}
# A known user listing or inspecting models is about to ask for one: the same as a hint (POST /prewarm/hint).
PRESENCE_ENDPOINTS = frozenset({("GET", "/api/tags"), ("GET", "/v1/models"), ("POST", "/api/show")})
# Ollama's routes that change what the server holds on disk; off loopback they are admin operations.
MANAGEMENT_PATHS = ("/api/delete", "/api/pull", "/api/push", "/api/create", "/api/copy")
# The model lists a client reads; where each model has its own server the proxy merges them (app._list_models).
MODEL_LISTS = frozenset({"/v1/models", "/api/tags"})
# /api/show reads model metadata without loading it: it must not count as a cold start.
NON_LOADING_ENDPOINTS = frozenset({"/api/show"})

# Runner options that make Ollama reload a resident model when they change.
RUNNER_OPTIONS = frozenset(
    {"num_ctx", "num_gpu", "main_gpu", "num_batch", "num_thread", "use_mmap", "use_mlock", "numa", "low_vram"}
)

MAX_USER_CHARS = 256
# Longer names are refused: no real model is named like that, and each name a client makes up would
# otherwise cost memory (and a row) for as long as it is remembered.
MAX_MODEL_NAME_BYTES = 256
_BEARER = "bearer "

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Dropped on the way up as well: aiohttp sets Host and Content-Length for the upstream
# connection (Ollama rejects a foreign Host when it listens on loopback).
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length"}


@dataclass(slots=True)
class RequestInfo:
    """The few facts the proxy takes from a request body."""

    model: str | None
    stream: bool
    body: dict[str, Any] | None  # the parsed body, for hooks; None when it was not a JSON object
    user: str | None  # the OpenAI body's `user`
    error: str | None = None  # why the body could not be read (forwarded untouched anyway)
    refused: bool = False  # the model name is unusable: answer 400 with `error`, do not forward


def api_of(path: str) -> str:
    if path.startswith("/api/"):
        return "ollama"
    if path.startswith("/v1/"):
        return "openai"
    return "other"


def parse_request(endpoint: str, raw: bytes) -> RequestInfo:
    """Read model, stream flag and user from a known endpoint's body (one json.loads)."""
    default_stream = MODEL_ENDPOINTS[endpoint]
    if not raw:
        return RequestInfo(None, default_stream, None, None, "empty body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return RequestInfo(None, default_stream, None, None, f"malformed JSON: {exc}"[:200])
    except RecursionError:  # json.loads recurses per nesting level: a body of 100k '[' must not become a 500
        return RequestInfo(None, default_stream, None, None, "malformed JSON: nested too deeply")
    if not isinstance(body, dict):
        return RequestInfo(None, default_stream, None, None, "JSON body is not an object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        # /api/show historically also accepted `name`.
        model = body.get("name") if endpoint == "/api/show" else None
        if not isinstance(model, str) or not model:
            model = None
    stream = body.get("stream", default_stream)
    user = _body_user(endpoint, body)
    if model is not None:
        problem = model_name_problem(model)
        if problem is not None:
            return RequestInfo(None, stream if isinstance(stream, bool) else default_stream, None, None, problem, True)
    return RequestInfo(
        model=model,
        stream=stream if isinstance(stream, bool) else default_stream,
        body=body,
        user=user,
    )


def _body_user(endpoint: str, body: dict[str, Any]) -> str | None:
    """Who the body says sent it: OpenAI's `user` (the Responses API's newer `safety_identifier` too),
    Anthropic's `metadata.user_id`. Ollama's own API has no such field."""
    if not endpoint.startswith("/v1/"):
        return None
    candidates: list[Any] = [body.get("user")]
    if endpoint == "/v1/responses":
        candidates.append(body.get("safety_identifier"))
    if endpoint == "/v1/messages":
        meta = body.get("metadata")
        candidates = [meta.get("user_id") if isinstance(meta, dict) else None]
    return next((u for u in candidates if isinstance(u, str) and u), None)


def model_name_problem(name: str) -> str | None:
    """Why a client's model name cannot be served or stored, else None.

    Every name the proxy keeps passes here first: it must be valid Unicode text
    (a lone surrogate cannot be encoded, and once killed the log writer), at most
    MAX_MODEL_NAME_BYTES bytes, with no control characters. The message shows the
    name escaped, so the log row and the client's error are plain text.
    """
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return f"model name {escape_name(name)} is not valid Unicode text"
    if size > MAX_MODEL_NAME_BYTES:
        return f"model name of {size} bytes is longer than the {MAX_MODEL_NAME_BYTES}-byte limit"
    if not name.isprintable():
        return f"model name {escape_name(name)} has control characters"
    return None


def escape_name(name: str, limit: int = 80) -> str:
    """A client's string as printable ASCII-safe text (quoted, backslash escapes), cut to `limit` characters."""
    text = ascii(name[:limit])
    return text if len(name) <= limit else text[:-1] + "...'"


def runner_options(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options in a request that force Ollama to reload the model if they differ."""
    if not body:
        return {}
    opts = body.get("options")
    if not isinstance(opts, dict):
        return {}
    return {k: v for k, v in opts.items() if k in RUNNER_OPTIONS}


def sanitize_user(value: str | None) -> str | None:
    """Keep a client-supplied user id storable: printable characters only, bounded length."""
    if not value:
        return None
    if not value.isprintable():
        value = "".join(ch for ch in value if ch.isprintable())
    value = value.strip()[:MAX_USER_CHARS]
    return value or None


def user_of(headers: Mapping[str, str], body_user: str | None, settings: Settings) -> str | None:
    """The first of settings.user_headers that is set, else the OpenAI body's `user`, else an API key's user."""
    for name in settings.user_headers:
        user = sanitize_user(headers.get(name))
        if user:
            return user
    user = sanitize_user(body_user)
    if user:
        return user
    if settings.api_keys:
        auth = headers.get("Authorization")
        if auth and auth[:7].lower() == _BEARER:
            return settings.user_for_api_key(auth[7:].strip())
    return None


_NUM = rb'"%s"\s*:\s*(\d+)'
_USAGE_KEYS = ("prompt_eval_count", "eval_count", "load_duration", "prompt_tokens", "completion_tokens",
               "input_tokens", "output_tokens")
# key -> (the quoted name, searched for from the end; the pattern that must match where it is found)
_USAGE_PATTERNS = {k: (b'"%s"' % k.encode(), re.compile(_NUM % k.encode())) for k in _USAGE_KEYS}
TAIL_KEEP = 8192


@dataclass(slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    load_ms: float | None = None


def _last_int(key: tuple[bytes, re.Pattern[bytes]], text: bytes) -> int | None:
    """The number after the last `"name": <digits>` in text, found from the end (rfind runs in C; every
    response's tail passes here). The quote before the name keeps `"eval_count"` from matching inside
    `"prompt_eval_count"`."""
    name, pattern = key
    at = text.rfind(name)
    while at >= 0:
        match = pattern.match(text, at)
        if match:
            return int(match.group(1))
        at = text.rfind(name, 0, at)
    return None


def usage_from_tail(tail: bytes) -> Usage:
    """Token counts and load time from the last bytes of a response.

    Ollama puts them in its final chunk (done:true; counts and load_duration in ns),
    after any long `context` or embedding arrays, so the tail is enough; OpenAI puts
    them in the `usage` object of the last data chunk or the body. Only the last line
    that carries them is read, so intermediate chunks cannot be mistaken for totals.
    """
    out = Usage()
    prompt = _last_int(_USAGE_PATTERNS["prompt_eval_count"], tail)
    completion = _last_int(_USAGE_PATTERNS["eval_count"], tail)
    if prompt is not None or completion is not None:
        out.prompt_tokens, out.completion_tokens = prompt, completion
        load_ns = _last_int(_USAGE_PATTERNS["load_duration"], tail)
        out.load_ms = load_ns / 1e6 if load_ns is not None else None
        return out
    out.prompt_tokens = _last_int(_USAGE_PATTERNS["prompt_tokens"], tail)
    out.completion_tokens = _last_int(_USAGE_PATTERNS["completion_tokens"], tail)
    if out.prompt_tokens is None and out.completion_tokens is None:  # the Responses and Messages APIs' names
        out.prompt_tokens = _last_int(_USAGE_PATTERNS["input_tokens"], tail)
        out.completion_tokens = _last_int(_USAGE_PATTERNS["output_tokens"], tail)
    return out


# Ollama's final line says done:true near its start and ends with the durations (a long
# `context` array may sit between them, beyond the tail the proxy keeps).
_STREAM_END = re.compile(rb'data: \[DONE\]\s*$|("done"\s*:\s*true|"eval_duration"\s*:\s*\d+)[^\n]*\n?\s*$')


def stream_finished(tail: bytes) -> bool:
    """Whether a stream's last bytes are its end marker: SSE's `data: [DONE]` or Ollama's done:true line.

    A client may hang up as soon as it has read the marker, before the closing
    chunk arrives: it has had the whole answer, so the request is not a 499.
    """
    return bool(_STREAM_END.search(tail))


def error_body(endpoint: str, status: int, message: str) -> bytes:
    """An error in the API's own shape: Ollama's {"error": "..."} or OpenAI's error object."""
    if endpoint.startswith("/v1/"):
        kind, code = _OPENAI_ERRORS.get(status, ("api_error", None))
        return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()
    return json.dumps({"error": message}).encode()


_OPENAI_ERRORS = {
    400: ("invalid_request_error", "invalid_model"),
    408: ("invalid_request_error", "request_timeout"),
    413: ("invalid_request_error", "request_too_large"),
    503: ("api_error", "overloaded"),
    502: ("api_error", "upstream_unreachable"),
    504: ("api_error", "upstream_timeout"),
}
