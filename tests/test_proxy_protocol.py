"""Wire-format rules (request fields, user id, usage in the response tail, error shapes) and residency."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from hypothesis import given
from hypothesis import strategies as st

from prewarm.config import Settings
from prewarm.prewarmer.residency import ResidencyTracker
from prewarm.proxy.protocol import (
    MAX_USER_CHARS,
    error_body,
    parse_request,
    runner_options,
    sanitize_user,
    usage_from_tail,
    user_of,
)
from prewarm.records import RequestEvent


def test_parse_request_fields_and_defaults() -> None:
    info = parse_request(
        "/api/chat", b'{"model":"m:1b","messages":[],"keep_alive":"5m","options":{"num_ctx":8192,"temperature":0}}')
    assert (info.model, info.stream, info.error) == ("m:1b", True, None)
    assert runner_options(info.body) == {"num_ctx": 8192}
    assert parse_request("/v1/chat/completions", b'{"model":"m"}').stream is False
    assert parse_request("/api/generate", b'{"model":"m","stream":false}').stream is False
    assert parse_request("/api/show", b'{"name":"old"}').model == "old"
    assert parse_request("/v1/embeddings", b'{"model":"m","user":"u"}').user == "u"
    assert parse_request("/api/chat", b'{"model":"m","user":"u"}').user is None  # `user` is OpenAI's field
    for raw, why in ((b"", "empty"), (b"{nope", "malformed"), (b"[1]", "not an object")):
        info = parse_request("/api/chat", raw)
        assert info.model is None and why in info.error
    assert parse_request("/api/chat", b'{"model": 7}').model is None


@given(st.binary(max_size=200))
def test_parse_request_never_raises(raw: bytes) -> None:
    parse_request("/v1/completions", raw)


@given(st.text(max_size=2000))
def test_sanitized_user_is_printable_and_bounded(text: str) -> None:
    user = sanitize_user(text)
    assert user is None or (user.isprintable() and 0 < len(user) <= MAX_USER_CHARS)


def test_user_precedence_and_api_key_hash() -> None:
    settings = Settings(api_keys={"sk-1": "carol"})
    assert "sk-1" not in json.dumps(settings.api_keys)
    both = {"X-Prewarm-User": "alice", "Authorization": "Bearer sk-1"}
    assert user_of(both, "bob", settings) == "alice"
    assert user_of({"Authorization": "Bearer sk-1"}, "bob", settings) == "bob"
    assert user_of({"Authorization": "bearer sk-1"}, None, settings) == "carol"
    assert user_of({"Authorization": "Basic sk-1"}, None, settings) is None
    assert user_of({"X-Prewarm-User": "  "}, None, settings) is None


def test_usage_from_ollama_final_chunk_after_long_context() -> None:
    final = {
        "model": "m", "response": "", "done": True, "context": list(range(5000)),
        "total_duration": 9_000_000_000, "load_duration": 2_500_000_000,
        "prompt_eval_count": 26, "eval_count": 290,
    }
    tail = (b'{"response":"x","done":false}\n' + json.dumps(final).encode() + b"\n")[-8192:]
    u = usage_from_tail(tail)
    assert (u.prompt_tokens, u.completion_tokens, u.load_ms) == (26, 290, 2500.0)


def test_usage_from_openai_sse_and_absent() -> None:
    sse = (
        b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}\n\n'
        b"data: [DONE]\n\n"
    )
    u = usage_from_tail(sse)
    assert (u.prompt_tokens, u.completion_tokens, u.load_ms) == (11, 3, None)
    u = usage_from_tail(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n')
    assert (u.prompt_tokens, u.completion_tokens) == (None, None)


def test_responses_and_messages_name_their_model_user_and_usage() -> None:
    info = parse_request("/v1/responses", json.dumps({"model": "m", "input": "hi", "user": "ann"}).encode())
    assert (info.model, info.user, info.stream) == ("m", "ann", False)
    info = parse_request("/v1/responses", json.dumps({"model": "m", "input": "hi", "safety_identifier": "bo"}).encode())
    assert info.user == "bo"
    info = parse_request("/v1/messages", json.dumps({"model": "m", "max_tokens": 5, "stream": True,
                                                     "messages": [], "metadata": {"user_id": "cy"}}).encode())
    assert (info.model, info.user, info.stream) == ("m", "cy", True)
    assert parse_request("/v1/messages", json.dumps({"model": "m", "user": "not-anthropic"}).encode()).user is None
    u = usage_from_tail(b'{"type":"message","usage":{"input_tokens":9,"output_tokens":4}}')
    assert (u.prompt_tokens, u.completion_tokens) == (9, 4)
    sse = (b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":'
           b'{"input_tokens":7,"output_tokens":2,"total_tokens":9}}}\n\n')
    u = usage_from_tail(sse)
    assert (u.prompt_tokens, u.completion_tokens) == (7, 2)


def test_error_shapes() -> None:
    assert json.loads(error_body("/api/chat", 502, "down")) == {"error": "down"}
    assert json.loads(error_body("/metrics", 502, "down")) == {"error": "down"}
    err = json.loads(error_body("/v1/embeddings", 413, "big"))["error"]
    assert err == {"message": "big", "type": "invalid_request_error", "code": "request_too_large"}


def _event(model: str, status: int = 200, endpoint: str = "/api/chat") -> RequestEvent:
    import datetime as dt

    return RequestEvent("x", dt.datetime.now(dt.UTC), None, model, None, "ollama", endpoint, False, status)


async def test_residency_tracker_polls_and_learns_from_requests() -> None:
    answers: list[dict[str, int] | Exception] = [
        aiohttp.ClientConnectionError("down"),
        {"a:latest": 100},
        {"b:1b": 5},
    ]

    async def fetch() -> dict[str, int]:
        item = answers.pop(0)
        if isinstance(item, Exception):
            raise item
        return dict(item)

    t = ResidencyTracker(fetch, refresh_s=3600)
    await t.start()
    assert t.is_resident("a") is None and t.last_error == "down"  # unknown, not "cold"
    await t.refresh()
    assert t.is_resident("a") is True and t.is_resident("a:latest") and t.is_resident("b:1b") is False

    t.request_started("b:1b")
    t.request_started("b:1b")
    assert t.in_flight == {"b:1b": 2}
    t.request_finished("b:1b", _event("b:1b", status=500))
    assert t.is_resident("b:1b") is False
    t.request_finished("b:1b", _event("b:1b"))
    assert t.in_flight == {} and t.is_resident("b:1b") is True
    # /api/show never reaches the hooks (the proxy calls them only for endpoints that load the model:
    # test_proxy_app's show tests), so the tracker no longer repeats that rule.
    t.mark_unloaded("b:1b")
    assert t.is_resident("b:1b") is False
    await t.refresh()
    assert t.resident == {"b:1b": 5}
    await t.stop()


async def test_residency_mark_during_poll_survives_stale_answer() -> None:
    gate = asyncio.Event()

    async def fetch() -> dict[str, int]:
        await gate.wait()
        return {}

    t = ResidencyTracker(fetch, refresh_s=3600)
    poll = asyncio.create_task(t.refresh())
    await asyncio.sleep(0)
    t.mark_resident("m")  # a request finished while the poll was on its way
    gate.set()
    await poll
    assert t.is_resident("m") is True


async def test_residency_background_poll() -> None:
    calls = 0

    async def fetch() -> dict[str, int]:
        nonlocal calls
        calls += 1
        return {"m": calls}

    t = ResidencyTracker(fetch, refresh_s=0.01)
    await t.start()
    for _ in range(200):
        if calls >= 3:
            break
        await asyncio.sleep(0.02)
    await t.stop()
    assert calls >= 3 and t.resident["m"] >= 3
