"""HTTP plumbing shared by the Ollama and vLLM emulations: the emulator header, JSON bodies,
error shapes, NDJSON and SSE streams."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from prewarm.emulator.runners import BadRequest

EMULATOR_HEADER = "X-Prewarm-Emulator"


async def mark_emulator(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: every response, streamed or not, says it came from the emulator."""
    response.headers[EMULATOR_HEADER] = "1"


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("missing request body")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid JSON in request body: {exc}") from None
    except RecursionError:
        raise BadRequest("invalid JSON in request body: nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false, got {value!r}")
    return value


def iso(ts: float) -> str:
    """RFC 3339 in UTC with a Z, as Ollama writes created_at."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def messages_text(messages: Any, allow_parts: bool = False) -> str:
    """The text of a chat, for token counts and seeding the reply.

    ``allow_parts``: OpenAI's content may be a list of parts; only text parts count.
    """
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages must be a list of objects with role and content")
    texts = []
    for m in messages:
        content = m.get("content")
        if allow_parts and isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if content is not None and not isinstance(content, str):
            raise BadRequest("message content must be a string")
        texts.append(content or "")
    return "\n".join(texts)


def openai_error_body(status: int, message: str) -> dict[str, Any]:
    """Ollama's OpenAI-compatibility error object (openai/openai.go NewError)."""
    etype = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": etype, "param": None, "code": None}}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200) -> web.Response:
    """Compact JSON, as Go's encoder writes it."""
    return web.Response(body=dumps(obj), status=status, content_type="application/json")


async def start_stream(request: web.Request, content_type: str) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
    await resp.prepare(request)
    return resp


async def ndjson_line(resp: web.StreamResponse, obj: Any) -> None:
    await resp.write(dumps(obj) + b"\n")


async def sse_event(resp: web.StreamResponse, obj: Any) -> None:
    await resp.write(b"data: " + dumps(obj) + b"\n\n")


async def sse_done(resp: web.StreamResponse) -> None:
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
