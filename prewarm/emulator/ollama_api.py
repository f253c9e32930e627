"""Ollama's native API (/api/*) on top of the emulated engine, in Ollama's response shapes (docs/api.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from prewarm.emulator import text
from prewarm.emulator.generation import Engine, parse_keep_alive
from prewarm.emulator.modelinfo import DEFAULT_NUM_CTX, ModelSpec
from prewarm.emulator.runners import FOREVER, BadRequest, Runner
from prewarm.emulator.web_common import (
    flag,
    iso,
    iso_now,
    json_response,
    messages_text,
    ndjson_line,
    read_json,
    start_stream,
)

VERSION = "0.12.0-prewarm-emulator"
ENGINE_KEY: web.AppKey[Engine] = web.AppKey("prewarm_emulator_engine", Engine)


def _engine(request: web.Request) -> Engine:
    return request.app[ENGINE_KEY]


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def require_completion(spec: ModelSpec, what: str) -> None:
    if "completion" not in spec.capabilities():
        raise BadRequest(f'"{spec.name}" does not support {what}')


async def _load_or_unload(engine: Engine, spec: ModelSpec, body: dict[str, Any], chat: bool) -> web.Response:
    """No prompt / no messages: Ollama loads the model, or with keep_alive 0 unloads it."""
    if parse_keep_alive(body.get("keep_alive")) == 0:
        engine.unload(spec)
        reason = "unload"
    else:
        async with engine.load_only(spec, body.get("options"), body.get("keep_alive")):
            pass
        reason = "load"
    out: dict[str, Any] = {"model": body["model"], "created_at": iso_now()}
    if chat:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update(done=True, done_reason=reason)
    return json_response(out)


async def _tokens(request: web.Request, gen: Any, stream: bool, model: str, field: str,
                  content: Callable[[str], Any], extra: Callable[[], dict[str, Any]]
                  ) -> tuple[web.StreamResponse | None, dict[str, Any]]:
    """Generate's and chat's shared answer, up to the done:true chunk (sent by _finish, once the runner is free).

    `field` is where the text goes ("response" or "message"), `content` wraps a
    piece of text for it, `extra` gives the fields only the final chunk carries.
    """
    resp: web.StreamResponse | None = None
    if stream:
        resp = await start_stream(request, "application/x-ndjson")
        async for tok in gen.tokens():
            await ndjson_line(resp, {"model": model, "created_at": iso_now(), field: content(tok), "done": False})
    else:
        async for _ in gen.tokens():
            pass
    final = {
        "model": model,
        "created_at": iso_now(),
        field: content("" if stream else gen.text),
        "done": True,
        "done_reason": gen.done_reason,
        **extra(),
        **gen.metrics(),
    }
    return resp, final


async def _finish(resp: web.StreamResponse | None, final: dict[str, Any]) -> web.StreamResponse:
    if resp is None:
        return json_response(final)
    await ndjson_line(resp, final)
    await resp.write_eof()
    return resp


async def generate(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    body = await read_json(request)
    spec = engine.spec(body.get("model"))
    prompt = _string(body, "prompt")
    if not prompt and not body.get("images"):
        return await _load_or_unload(engine, spec, body, chat=False)
    require_completion(spec, "generate")
    full_prompt = " ".join(p for p in (_string(body, "system"), prompt) if p)
    async with engine.generate(spec, full_prompt, body.get("options"), body.get("keep_alive")) as gen:
        resp, final = await _tokens(request, gen, flag(body, "stream", True), body["model"], "response",
                                    lambda t: t, lambda: {"context": text.token_ids(full_prompt + " " + gen.text)})
    return await _finish(resp, final)


async def chat(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    body = await read_json(request)
    spec = engine.spec(body.get("model"))
    messages = body.get("messages")
    if not messages:
        return await _load_or_unload(engine, spec, body, chat=True)
    prompt = messages_text(messages)
    require_completion(spec, "chat")
    async with engine.generate(spec, prompt, body.get("options"), body.get("keep_alive")) as gen:
        resp, final = await _tokens(request, gen, flag(body, "stream", True), body["model"], "message",
                                    lambda t: {"role": "assistant", "content": t}, dict)
    return await _finish(resp, final)


async def embed(request: web.Request) -> web.Response:
    engine = _engine(request)
    body = await read_json(request)
    spec = engine.spec(body.get("model"))
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw if raw is not None else []
    if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
        raise BadRequest("input must be a string or a list of strings")
    inputs = [s for s in inputs if s] if isinstance(raw, list) else inputs
    t0 = time.monotonic()
    async with engine.hold(spec, body.get("options"), body.get("keep_alive")) as (_, load_s):
        if not inputs:
            return json_response({"model": body["model"], "embeddings": []})
        vectors = [text.embedding(spec.name, s) for s in inputs]
    return json_response(
        {
            "model": body["model"],
            "embeddings": vectors,
            "total_duration": int((time.monotonic() - t0) * 1e9),
            "load_duration": int(load_s * 1e9),
            "prompt_eval_count": sum(text.count_tokens(s) for s in inputs),
        }
    )


async def embeddings(request: web.Request) -> web.Response:
    """The legacy endpoint: one prompt, one un-normalised vector."""
    engine = _engine(request)
    body = await read_json(request)
    spec = engine.spec(body.get("model"))
    prompt = _string(body, "prompt")
    async with engine.hold(spec, body.get("options"), body.get("keep_alive")):
        vector = text.embedding(spec.name, prompt, normalize=False) if prompt else []
    return json_response({"embedding": vector})


def _ps_entry(r: Runner, now: float) -> dict[str, Any]:
    return {
        "name": r.name,
        "model": r.name,
        "size": r.size,
        "digest": r.spec.digest,
        "details": r.spec.details(),
        "expires_at": iso(r.expiry(now)).replace("Z", "+00:00"),
        "size_vram": r.size,
        "context_length": r.options["num_ctx"],
    }


async def ps(request: web.Request) -> web.Response:
    now = time.time()
    runners = sorted(_engine(request).scheduler.loaded.values(), key=lambda r: -r.expiry(now))
    return json_response({"models": [_ps_entry(r, now) for r in runners]})


async def tags(request: web.Request) -> web.Response:
    engine = _engine(request)
    modified = iso(engine.started_at)
    return json_response(
        {
            "models": [
                {
                    "name": s.name,
                    "model": s.name,
                    "modified_at": modified,
                    "size": s.file_bytes,
                    "digest": s.digest,
                    "details": s.details(),
                }
                for s in engine.specs.values()
            ]
        }
    )


async def show(request: web.Request) -> web.Response:
    engine = _engine(request)
    body = await read_json(request)
    spec = engine.spec(body.get("model") or body.get("name"))
    return json_response(
        {
            "modelfile": f"# Modelfile generated by the prewarm emulator\nFROM {spec.name}\n",
            "parameters": f"num_ctx                        {DEFAULT_NUM_CTX}",
            "template": "{{ .Prompt }}",
            "details": spec.details(),
            "model_info": spec.model_info(),
            "capabilities": spec.capabilities(),
            "modified_at": iso(engine.started_at),
        }
    )


async def version(request: web.Request) -> web.Response:
    return json_response({"version": VERSION, "emulator": True})


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running (prewarm emulator: no GPU, simulated models)")


async def stats(request: web.Request) -> web.Response:
    sched = _engine(request).scheduler
    now = time.time()
    return json_response(
        {
            "emulator": True,
            "vram_bytes": sched.vram_bytes,
            "vram_used": sched.vram_used,
            "peak_vram_used": sched.stats.peak_vram_used,
            "loads": sched.stats.loads,
            "unloads": sched.stats.unloads,
            "evictions": sched.stats.evictions,
            "reloads": sched.stats.reloads,
            "busy_errors": sched.stats.busy_errors,
            "resident": [
                {
                    "model": r.name,
                    "size_bytes": r.size,
                    "num_ctx": r.options["num_ctx"],
                    "in_flight": r.refs,
                    "loading": r.loading,
                    "expires_in_s": None if r.session_s == FOREVER else round(r.expiry(now) - now, 3),
                }
                for r in sched.loaded.values()
            ],
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", root),
        web.post("/api/generate", generate),
        web.post("/api/chat", chat),
        web.post("/api/embed", embed),
        web.post("/api/embeddings", embeddings),
        web.get("/api/ps", ps),
        web.get("/api/tags", tags),
        web.post("/api/show", show),
        web.get("/api/version", version),
        web.get("/emulator/stats", stats),
    ]
