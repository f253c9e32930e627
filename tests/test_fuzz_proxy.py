"""Bad input, fuzzed with hypothesis, against the real proxy app (in-process) with the emulator behind it.

Requests go over a raw socket, so nothing on the client side cleans them up: invalid JSON and UTF-8,
wrong types for every field the proxy or the upstream reads, deep nesting, large bodies, control
characters and megabyte headers, keep_alive values, model names with path characters, and admin
paths. Every answer must be either the proxy's own error (a 4xx in the API's shape, or aiohttp's own
400/431 for a header it cannot parse) or the upstream's answer forwarded (it carries the emulator's
header); never a 500 from the proxy, never a crash, and every request that reached the proxy's
handler is a row.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prewarm.admin import make_service_app
from prewarm.backends import OllamaBackend
from prewarm.catalog import load_catalog, sample_catalog_path
from prewarm.config import Settings
from prewarm.emulator import make_app
from prewarm.prewarmer import Prewarmer
from prewarm.store import Store

GB = 10**9
EXAMPLES = 150
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TRIED: dict[str, int] = {}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Target:
    def __init__(self, host: str, port: int, store: Store) -> None:
        self.host, self.port, self.store = host, port, store
        self.handled = 0  # requests the proxy's handler saw (not /prewarm/*): each must be a row
        self.sent_paths: list[tuple[str, str, str, int]] = []
        self.seq = 0

    async def send(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Answer:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: close",
                f"Content-Length: {len(body)}", "Content-Type: application/json"]
        raw = "\r\n".join(head).encode() + b"\r\n"
        self.seq += 1
        headers = {"X-Prewarm-User": f"fz{self.seq}", **(headers or {})}
        for k, v in headers.items():
            raw += k.encode() + b": " + v.encode("utf-8", "surrogateescape") + b"\r\n"
        try:
            writer.write(raw + b"\r\n" + body)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 60)
        except (ConnectionResetError, BrokenPipeError):
            # aiohttp answers 400 to a header line over 8190 bytes and closes while the rest is still being
            # sent; the kernel then resets the connection before the answer can be read.
            assert max(map(len, raw.split(b"\r\n"))) > 8190, "connection reset on a request of normal size"
            data = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n"
        finally:
            writer.close()
        answer = parse(data)
        if not path.startswith("/prewarm/") and not is_parser_refusal(answer):
            self.handled += 1
            self.sent_paths.append((headers["X-Prewarm-User"], method, path, answer.status))
        return answer


def parse(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return Answer(status, headers, body)


def is_parser_refusal(a: Answer) -> bool:
    """aiohttp's HTTP parser refused the request before any handler ran (header too large, bad bytes)."""
    return a.status in (400, 431) and a.headers.get("content-type", "").startswith("text/plain")


def check(a: Answer, path: str) -> None:
    """A clear answer: the upstream's own (forwarded) or the proxy's error in the API's shape; never a proxy 5xx."""
    if "x-prewarm-emulator" in a.headers:  # the upstream's answer, forwarded byte for byte (transparency)
        assert a.status < 500 or json.loads(a.body)["error"], a  # its 5xx (busy, too large) say why
        return
    if is_parser_refusal(a):
        return
    assert a.status < 500, (path, a)
    if a.status >= 400:
        doc = json.loads(a.body)
        err = doc["error"]
        if path.startswith("/v1/"):
            assert isinstance(err["message"], str) and err["type"], a
        else:
            assert isinstance(err, str) and err, a


@pytest.fixture
async def target(aiohttp_server, tmp_path):
    catalog = load_catalog(sample_catalog_path())
    emulator = await aiohttp_server(make_app(catalog, 24 * GB, time_scale=0.0, tokens_per_second=100_000,
                                             busy_wait_s=0.5))
    upstream = str(emulator.make_url("")).rstrip("/")
    cfg = Settings(upstream=upstream, db=str(tmp_path / "f.duckdb"), vram_budget=12 * GB, vram_reserve=0,
                   ps_refresh=0.2, log_flush_interval=0.05, room_wait=0.5, max_body_bytes=256 * 1024)
    store = Store(cfg.db, cfg)
    store.open()
    pw = Prewarmer(cfg, OllamaBackend(upstream, catalog), store, catalog=catalog)
    await pw.start()
    server = await aiohttp_server(make_service_app(cfg, store, pw, pw))
    t = Target(server.host, server.port, store)
    yield t
    await store.flush()
    _, rows = await store.query("SELECT user_id FROM requests")
    logged = {r[0] for r in rows}
    missing = [p for p in t.sent_paths if p[0] not in logged and p[0].startswith("fz")]
    assert len(rows) == t.handled and not missing, ("every request the proxy handled is a row", missing)
    await pw.stop()
    await store.close()


ENDPOINTS = ["/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/show",
             "/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
MODELS = st.sampled_from(["qwen2.5:0.5b", "llama3.2:1b", "nomic-embed-text"]) | st.text(max_size=30) | json_values


def nested(depth: int) -> bytes:
    return b'{"model": "qwen2.5:0.5b", "options": ' + b"[" * depth + b"]" * depth + b"}"


bodies = st.one_of(
    st.binary(max_size=300),                                        # anything, invalid UTF-8 included
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"model": MODELS}, optional={
        "stream": json_values, "keep_alive": json_values | st.sampled_from(["5m", "-1", "0", "1h30m", "forever", "1e309"]),
        "options": json_values, "messages": json_values, "prompt": json_values, "input": json_values,
        "max_tokens": json_values, "user": json_values,
    }).map(lambda d: json.dumps(d).encode()),
    st.integers(min_value=1000, max_value=100_000).map(nested),     # deep nesting (json recursion limit)
    st.integers(min_value=200 * 1024, max_value=400 * 1024).map(lambda n: b'{"model":"' + b"x" * n + b'"}'),
)


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies)
async def test_fuzzed_bodies(target: Target, endpoint: str, body: bytes) -> None:
    TRIED["bodies"] = TRIED.get("bodies", 0) + 1
    a = await target.send("POST", endpoint, body)
    check(a, endpoint)


header_values = st.one_of(
    st.text(alphabet=st.characters(max_codepoint=0x7F, blacklist_characters="\r\n"), max_size=300),
    st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=100),
    st.integers(min_value=9000, max_value=2_000_000).map(lambda n: "u" * n),
)


@FUZZ
@given(user=header_values, auth=header_values, endpoint=st.sampled_from(["/api/generate", "/v1/chat/completions"]))
async def test_fuzzed_headers(target: Target, user: str, auth: str, endpoint: str) -> None:
    TRIED["headers"] = TRIED.get("headers", 0) + 1
    body = json.dumps({"model": "qwen2.5:0.5b", "prompt": "x", "messages": [{"role": "user", "content": "x"}],
                       "stream": False, "options": {"num_predict": 1}, "max_tokens": 1}).encode()
    a = await target.send("POST", endpoint, body, {"X-Prewarm-User": user, "Authorization": "Bearer " + auth})
    check(a, endpoint)
    if a.status == 200:
        await target.store.flush()
        _, rows = await target.store.query("SELECT user_id FROM requests ORDER BY ts_start DESC LIMIT 1")
        uid = rows[0][0]
        assert uid is None or (uid.isprintable() and len(uid) <= 256)


path_parts = st.one_of(
    st.sampled_from(["..", "%2e%2e", "..%2f..", "%2f", "%00", "a/../../b", "qwen2.5:0.5b", "%c0%af", "~root",
                     "%ff%fe", "a%0d%0aX-Injected:%201", "..%5c..", "" ]),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="#?"), max_size=30),
)


@FUZZ
@given(verb=st.sampled_from(["POST", "DELETE", "GET", "PUT"]),
       route=st.sampled_from(["/prewarm/load/", "/prewarm/unload/", "/prewarm/pin/", "/prewarm/", "/api/", "/v1/",
                              "/"]),
       parts=st.lists(path_parts, min_size=1, max_size=3))
async def test_fuzzed_paths_and_model_names(target: Target, verb: str, route: str, parts: list[str]) -> None:
    TRIED["paths"] = TRIED.get("paths", 0) + 1
    path = route + "/".join(parts)
    a = await target.send(verb, path, b"")
    if route.startswith("/prewarm/") and a.status >= 500:
        # An admin load the upstream refused is reported as such (502, its reason); never an unhandled 500.
        assert a.status == 502 and json.loads(a.body)["error"], (path, a)
        return
    check(a, path)


def test_zz_report_cases_tried() -> None:
    """Runs last in this file: the number of fuzz cases is part of docs/reliability.md."""
    print(f"\nfuzz cases tried: {TRIED} total {sum(TRIED.values())}")
    assert sum(TRIED.values()) >= 3 * EXAMPLES * 0.9 or not TRIED
