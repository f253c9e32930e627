"""Ollama's OpenAI compatibility layer (/v1/*), in the shapes of ollama/openai/openai.go.

Like Ollama, these endpoints read no keep_alive: a resident model keeps the
duration it has and a fresh load gets the default.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from prewarm.emulator import text
from prewarm.emulator.generation import Engine
from prewarm.emulator.ollama_api import ENGINE_KEY, require_completion
from prewarm.emulator.runners import BadRequest
from prewarm.emulator.web_common import (
    flag,
    json_response,
    messages_text,
    read_json,
    sse_done,
    sse_event,
    start_stream,
)

FINGERPRINT = "fp_ollama"


def _engine(request: web.Request) -> Engine:
    return request.app[ENGINE_KEY]


def _options(body: dict[str, Any]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for src, dst in (("max_tokens", "num_predict"), ("seed", "seed")):
        if body.get(src) is not None:
            opts[dst] = body[src]
    return opts


def _include_usage(body: dict[str, Any]) -> bool:
    so = body.get("stream_options")
    if so is None:
        return False
    if not isinstance(so, dict):
        raise BadRequest("stream_options must be an object")
    return bool(so.get("include_usage"))


def _usage(metrics: dict[str, int]) -> dict[str, int]:
    p, c = metrics["prompt_eval_count"], metrics["eval_count"]
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    body = await read_json(request)
    spec = engine.spec(body.get("model"))
    messages = body.get("messages")
    if not messages:
        raise BadRequest("messages is required")
    prompt = messages_text(messages, allow_parts=True)
    require_completion(spec, "chat")
    stream = flag(body, "stream", False)
    include_usage = stream and _include_usage(body)
    cid = f"chatcmpl-{secrets.randbelow(1000)}"
    model = body["model"]

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    async with engine.generate(spec, prompt, _options(body), None) as gen:
        if stream:
            resp = await start_stream(request, "text/event-stream")
            async for tok in gen.tokens():
                await sse_event(resp, chunk({"role": "assistant", "content": tok}, None))
        else:
            async for _ in gen.tokens():
                pass
        metrics = gen.metrics()
    if not stream:
        return json_response(
            {
                "id": cid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": FINGERPRINT,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": gen.text},
                        "finish_reason": gen.done_reason,
                    }
                ],
                "usage": _usage(metrics),
            }
        )
    return await _end_stream(resp, chunk({"role": "assistant", "content": ""}, gen.done_reason),
                             chunk({}, None) if include_usage else None, metrics)


async def _end_stream(resp: web.StreamResponse, last: dict[str, Any], usage_chunk: dict[str, Any] | None,
                      metrics: dict[str, Any]) -> web.StreamResponse:
    """The end of an OpenAI stream: the finish_reason chunk, the usage chunk (no choices) when
    stream_options.include_usage asked for it, then data: [DONE]."""
    await sse_event(resp, last)
    if usage_chunk is not None:
        await sse_event(resp, dict(usage_chunk, choices=[], usage=_usage(metrics)))
    await sse_done(resp)
    return resp


async def completions(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    body = await read_json(request)
    spec = engine.spec(body.get("model"))
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("prompt must be a non-empty string")
    require_completion(spec, "generate")
    stream = flag(body, "stream", False)
    include_usage = stream and _include_usage(body)
    cid = f"cmpl-{secrets.randbelow(1000)}"
    model = body["model"]

    def chunk(piece: str, finish: str | None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "text_completion",
            "created": int(time.time()),
            "choices": [{"text": piece, "index": 0, "finish_reason": finish}],
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }

    async with engine.generate(spec, prompt, _options(body), None) as gen:
        if stream:
            resp = await start_stream(request, "text/event-stream")
            async for tok in gen.tokens():
                await sse_event(resp, chunk(tok, None))
        else:
            async for _ in gen.tokens():
                pass
        metrics = gen.metrics()
    if not stream:
        out = chunk(gen.text, gen.done_reason)
        out["usage"] = _usage(metrics)
        return json_response(out)
    return await _end_stream(resp, chunk("", gen.done_reason), chunk("", None) if include_usage else None, metrics)


async def embeddings(request: web.Request) -> web.Response:
    engine = _engine(request)
    body = await read_json(request)
    spec = engine.spec(body.get("model"))
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not inputs or not isinstance(inputs, list) or not all(isinstance(s, str) and s for s in inputs):
        raise BadRequest("invalid input: a non-empty string or list of non-empty strings is required")
    async with engine.hold(spec, None, None):
        vectors = [text.embedding(spec.name, s) for s in inputs]
    tokens = sum(text.count_tokens(s) for s in inputs)
    return json_response(
        {
            "object": "list",
            "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _model_obj(name: str, created: float) -> dict[str, Any]:
    namespace = name.split("/")[0] if "/" in name else "library"
    return {"id": name, "object": "model", "created": int(created), "owned_by": namespace}


async def list_models(request: web.Request) -> web.Response:
    engine = _engine(request)
    return json_response({"object": "list", "data": [_model_obj(n, engine.started_at) for n in engine.specs]})


async def get_model(request: web.Request) -> web.Response:
    engine = _engine(request)
    spec = engine.spec(request.match_info["model"])
    return json_response(_model_obj(spec.name, engine.started_at))


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/chat/completions", chat_completions),
        web.post("/v1/completions", completions),
        web.post("/v1/embeddings", embeddings),
        web.get("/v1/models", list_models),
        web.get("/v1/models/{model:.+}", get_model),
    ]
