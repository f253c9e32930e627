"""The OpenAI-compatible serving of one model, shared by the one-model-per-server stand-ins (vLLM, SGLang).

Both servers answer /v1/chat/completions and /v1/completions the way vLLM's
OpenAI front end does (SGLang's is modelled on it): the same choice and usage
shapes, streams ending in ``data: [DONE]``, errors as ``{"error": {...}}``.
What differs between them is when an engine may serve (``check_serving``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiohttp import web

from prewarm.emulator import text
from prewarm.emulator.generation import paced
from prewarm.emulator.runners import BadRequest, EmulatorError
from prewarm.emulator.web_common import (
    flag,
    json_response,
    messages_text,
    read_json,
    sse_done,
    sse_event,
    start_stream,
)

MAX_MODEL_LEN = 4096
KV_CACHE_FRACTION = 0.3


class ServingEngine:
    """One model's server: who may be served now, and how many requests are running."""

    def __init__(self, model: str, tokens_per_second: float) -> None:
        self.model = model
        self.tokens_per_second = tokens_per_second
        self.in_flight = 0
        self.created = int(time.time())
        self.counters: dict[str, int] = {"requests": 0, "rejected": 0}
        self._idle = asyncio.Event()
        self._idle.set()

    def check_serving(self) -> None:
        """Raise EmulatorError when the engine cannot serve a request now."""

    def begin_request(self) -> None:
        self.check_serving()
        self.counters["requests"] += 1
        self.in_flight += 1
        self._idle.clear()

    def end_request(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()


class ModelServerEngine(ServingEngine):
    """A one-model server that can give its GPU memory back: weights plus a KV-cache pool of KV_CACHE_FRACTION
    of the model's size (how vLLM and SGLang tag it), and a lock so one memory operation runs at a time."""

    def __init__(self, model: str, size_bytes: int, load_seconds: float, time_scale: float,
                 tokens_per_second: float) -> None:
        if size_bytes <= 0 or load_seconds < 0 or time_scale < 0 or tokens_per_second <= 0:
            raise ValueError("size_bytes and tokens_per_second must be > 0, load_seconds and time_scale >= 0")
        super().__init__(model, tokens_per_second)
        self.size_bytes = size_bytes
        self.kv_bytes = int(size_bytes * KV_CACHE_FRACTION)
        self.weight_bytes = size_bytes - self.kv_bytes
        self.load_seconds = load_seconds
        self.time_scale = time_scale
        self._op_lock = asyncio.Lock()


SERVING_KEY: web.AppKey[ServingEngine] = web.AppKey("prewarm_serving_engine", ServingEngine)


_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError"}


def error_response(status: int, message: str) -> web.Response:
    """vLLM's ErrorResponse: {"error": {"message", "type", "param", "code"}}."""
    etype = _ERROR_TYPES.get(status, "InternalServerError")
    return json_response({"error": {"message": message, "type": etype, "param": None, "code": status}}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except EmulatorError as exc:
        return error_response(exc.status, str(exc))


def _check_model(engine: ServingEngine, body: dict[str, Any]) -> str:
    model = body.get("model") or engine.model
    if model != engine.model:
        raise EmulatorError(f"The model `{model}` does not exist.", 404)
    return model


def _max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_tokens", body.get("max_completion_tokens"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"max_tokens must be a positive integer, got {value!r}")
    return value


def _include_usage(body: dict[str, Any]) -> bool:
    so = body.get("stream_options")
    return isinstance(so, dict) and bool(so.get("include_usage"))


async def _respond(request: web.Request, body: dict[str, Any], prompt: str, chat: bool) -> web.StreamResponse:
    engine = request.app[SERVING_KEY]
    model = _check_model(engine, body)
    stream = flag(body, "stream", False)
    max_tokens = _max_tokens(body)
    seed = body.get("seed") if isinstance(body.get("seed"), int) else None
    engine.begin_request()
    try:
        reply = text.reply_tokens(model, prompt, seed, max_tokens)
        finish = "length" if max_tokens is not None else "stop"
        prompt_tokens = text.count_tokens(prompt)
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + len(reply),
                 "completion_tokens": len(reply), "prompt_tokens_details": None}
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"

        def choice(piece: str, fin: str | None, first: bool = False) -> dict[str, Any]:
            if chat:
                delta = {"role": "assistant", "content": piece} if first else {"content": piece}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": fin,
                        **({"stop_reason": None} if fin else {})}
            return {"index": 0, "text": piece, "logprobs": None, "finish_reason": fin, "stop_reason": None}

        if not stream:
            async for _ in paced(reply, engine.tokens_per_second):
                pass
            full = "".join(reply)
            if chat:
                c = {"index": 0, "message": {"role": "assistant", "content": full, "tool_calls": []},
                     "logprobs": None, "finish_reason": finish, "stop_reason": None}
            else:
                c = {"index": 0, "text": full, "logprobs": None, "finish_reason": finish, "stop_reason": None}
            return json_response({"id": rid, "object": obj, "created": created, "model": model,
                                      "choices": [c], "usage": usage})
        chunk_obj = "chat.completion.chunk" if chat else "text_completion"
        resp = await start_stream(request, "text/event-stream")

        def chunk(ch: list[dict[str, Any]]) -> dict[str, Any]:
            return {"id": rid, "object": chunk_obj, "created": created, "model": model, "choices": ch}

        if chat:
            await sse_event(resp, chunk([choice("", None, first=True)]))
        sent = 0
        async for tok in paced(reply, engine.tokens_per_second):
            sent += 1
            await sse_event(resp, chunk([choice(tok, finish if sent == len(reply) else None)]))
        if _include_usage(body):
            final = chunk([])
            final["usage"] = usage
            await sse_event(resp, final)
        await sse_done(resp)
        return resp
    finally:
        engine.end_request()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    prompt = messages_text(messages, allow_parts=True)
    return await _respond(request, body, prompt, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("prompt must be a non-empty string")
    return await _respond(request, body, prompt, chat=False)


def model_card(engine: ServingEngine, owned_by: str) -> dict[str, Any]:
    return {"id": engine.model, "object": "model", "created": engine.created, "owned_by": owned_by,
            "root": engine.model, "parent": None, "max_model_len": MAX_MODEL_LEN, "permission": []}


def openai_routes() -> list[web.RouteDef]:
    return [web.post("/v1/chat/completions", chat_completions), web.post("/v1/completions", completions)]
