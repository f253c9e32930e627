"""Reliability and security, round two: each finding of the probe of 7939835 as a test through HTTP or the CLI.

Every test here runs real `prewarm emulate` and `prewarm serve` processes on
loopback and talks to them as a client would (raw sockets where a client library
would hide the behaviour); none reaches into the service's objects. The numbered
sections follow docs/reliability.md ("Round two").
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import resource
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from prewarm.localproc import (
    LOOPBACK,
    PREWARM_CMD,
    LocalStack,
    ProcessFailed,
    blast,
    clean_env,
    free_port,
    generate_request,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def stack_factory(tmp_path: Path):
    made: list[LocalStack] = []

    def make(**kw: Any) -> LocalStack:
        made.append(LocalStack(tmp_path, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


# -- 1. one request must never silence the log ------------------------------------------------------------

BAD_NAMES = [
    ("/api/generate", b'{"model": "\\ud800", "prompt": "hi"}'),
    ("/v1/chat/completions", b'{"model": "x\\udc80y", "messages": [{"role": "user", "content": "hi"}]}'),
    ("/api/show", b'{"name": "\\udfff"}'),
]


def test_surrogate_model_names_get_a_400_and_every_later_row_is_logged(stack_factory) -> None:
    s = stack_factory()
    sent, bad = 0, 0
    for i in range(300):
        if i % 10 == 5:
            path, body = BAD_NAMES[(i // 10) % 3]
            status, answer = s.request("POST", path, body)
            assert status == 400, answer
            assert "not valid Unicode" in answer.decode()
            bad += 1
        else:
            assert s.generate("qwen2.5:0.5b") == 200
        sent += 1
    health_status, health = s.request("GET", "/prewarm/health")
    assert health_status == 200 and json.loads(health)["ok"] is True
    rows = s.rows("SELECT count(*) AS n, count(*) FILTER (WHERE status = 400) AS bad, "
                  "count(*) FILTER (WHERE contains(error, '\\ud800')) AS escaped FROM requests "
                  "WHERE endpoint <> '/api/version'")
    assert rows == [{"n": sent, "bad": bad, "escaped": bad // 3 + (1 if bad % 3 else 0)}]
    rc, err = s.stop()
    assert rc == 0, err[-2000:]
    assert "0 dropped" in err


# -- 2. bounded state ---------------------------------------------------------------------------------

def test_a_model_name_over_256_bytes_is_refused(stack_factory) -> None:
    s = stack_factory()
    status, body = s.request("POST", "/api/generate", json.dumps({"model": "m" * 100_000, "prompt": "hi"}).encode())
    assert status == 400 and b"256-byte limit" in body
    status, _ = s.request("POST", "/api/generate", json.dumps({"model": "m" * 256, "prompt": "hi"}).encode())
    assert status == 404  # within the limit: the upstream answers for itself


def _blast(url: str, models: list[str], clients: int = 32) -> list[int]:
    return asyncio.run(blast(url, [generate_request(m) for m in models], clients))


def test_unknown_model_names_leave_no_state_behind(stack_factory) -> None:
    """Two identical batches of 10,000 unique names the upstream does not know: the second grows RSS < 20 MB."""
    s = stack_factory()
    names = [f"nope-{i:05d}-{uuid.uuid4().hex}" + "x" * 150 for i in range(10_000)]
    first = _blast(s.url, names)
    assert set(first) == {404}
    after_first = s.rss_bytes()
    second = _blast(s.url, [n.replace("nope", "gone") for n in names])
    assert set(second) == {404}
    growth = s.rss_bytes() - after_first
    assert growth < 20e6, f"RSS grew {growth / 1e6:.1f} MB over the second batch"
    assert s.rows("SELECT count(*) AS n FROM requests WHERE endpoint = '/api/generate'") == [{"n": 20_000}]


# -- 3. connections ------------------------------------------------------------------------------------

def _raise_own_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def test_idle_connections_cannot_lock_out_clients_under_a_1024_file_limit(stack_factory) -> None:
    _raise_own_nofile(4096)
    s = stack_factory(nofile=1024)
    idle = []
    try:
        for _ in range(1100):
            idle.append(socket.create_connection(("127.0.0.1", s.port), timeout=5))
        time.sleep(0.5)
        try:
            status, body = s.request("GET", "/prewarm/health", timeout=10)
        except OSError as exc:
            raise AssertionError(f"/prewarm/health did not answer with 1,100 idle connections open: {exc}") from None
        assert status == 200, body
        assert s.generate("qwen2.5:0.5b") == 200
    finally:
        for sock in idle:
            sock.close()
    rc, err = s.stop()
    assert rc == 0
    assert err.count("Too many open files") <= 1


def test_silent_and_slow_header_connections_are_closed(stack_factory) -> None:
    s = stack_factory(env={"PREWARM_IDLE_TIMEOUT": "1s"})
    silent = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    slow = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    slow.sendall(b"GET /api/version HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    time.sleep(3)
    for sock in (silent, slow):
        sock.settimeout(5)
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False  # still open 8 s after it went quiet
        assert closed, "an idle connection was not closed after idle_timeout"
        sock.close()


# -- 4. the budget holds under concurrency -----------------------------------------------------------

def test_the_budget_holds_under_concurrent_requests_for_many_models(stack_factory) -> None:
    """The probe's shape: 9 models, 32 clients, 800 requests, emulator 24 GB, budget 10 GB."""
    s = stack_factory(emu_args=["--time-scale", "0.02"], serve_args=["--vram-budget", "10GB"])
    models = ["qwen2.5:0.5b", "llama3.2:1b", "llama3.2:3b", "phi3.5:3.8b", "mistral:7b", "qwen2.5:7b",
              "llama3.1:8b", "gemma2:9b", "nomic-embed-text:latest"]
    rng = random.Random(7)
    picks = [rng.choice(models) for _ in range(800)]
    statuses = _blast(s.url, picks)
    assert len(statuses) == 800 and set(statuses) == {200}
    with LOOPBACK.open(f"http://127.0.0.1:{s.emu_port}/emulator/stats", timeout=10) as r:
        stats = json.loads(r.read())
    assert stats["peak_vram_used"] <= 10e9, stats
    assert stats["loads"] > 9  # the models really were swapped


# -- 5 and 6. SQL ------------------------------------------------------------------------------------

REFUSED_SQL = [
    "select * from read_text('/etc/hostname')",
    "select * from enable_logging(level='trace', storage='file', storage_path='/tmp/prewarm-probe-log')",
    "select * from checkpoint()",
    "select * from glob('/root/*')",
    "select * from '/etc/hostname'",
]


def test_sql_that_reads_files_or_changes_state_is_refused_through_the_service_and_the_file(stack_factory,
                                                                                           tmp_path: Path) -> None:
    s = stack_factory()
    assert s.generate("qwen2.5:0.5b") == 200
    for query in REFUSED_SQL:
        done = s.sql(query)
        assert done.returncode != 0 and done.stderr.count("\n") == 1, (query, done.stdout, done.stderr)
    rc, _ = s.stop()
    assert rc == 0
    for query in REFUSED_SQL:  # now the file is free: the direct path
        done = s.sql(query)
        assert done.returncode != 0 and done.stderr.count("\n") == 1, (query, done.stdout, done.stderr)
    assert not Path("/tmp/prewarm-probe-log").exists()
    own = tmp_path / "mine.csv"
    own.write_text("a,b\n1,2\n")
    done = subprocess.run(PREWARM_CMD + ["sql", "--db", str(s.db), "--allow-files", "--format", "json",
                                         f"select * from read_csv('{own}')"],
                          capture_output=True, text=True, timeout=60, env=s.env)
    assert done.returncode == 0 and json.loads(done.stdout) == [{"a": 1, "b": 2}], done.stderr


def test_a_runaway_query_is_interrupted_and_does_not_hold_the_shutdown(stack_factory) -> None:
    s = stack_factory(env={"PREWARM_SQL_TIMEOUT": "2s"})
    runaway = [subprocess.Popen(PREWARM_CMD + ["sql", "--db", str(s.db), "select sum(i % 7) from range(6000000000) t(i)"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=s.env)
               for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in runaway]
    for p, (_, err) in zip(runaway, outs, strict=False):
        assert p.returncode != 0
        assert "interrupted" in err or "already running" in err, err
    assert any("interrupted" in err for _, err in outs)
    assert s.rows("select 1 as one") == [{"one": 1}]
    again = subprocess.Popen(PREWARM_CMD + ["sql", "--db", str(s.db), "select sum(i % 7) from range(6000000000) t(i)"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=s.env)
    time.sleep(1.0)
    rc, err = s.stop(timeout=30)
    again.communicate(timeout=60)
    assert rc == 0, err[-2000:]
    assert not Path(f"{s.db}.service.json").exists()


# -- 7. bodies buffered at once --------------------------------------------------------------------------

def test_large_bodies_buffered_at_once_are_capped(stack_factory) -> None:
    s = stack_factory(env={"PREWARM_MAX_BUFFERED_BYTES": "64MiB"})
    body = json.dumps({"model": "qwen2.5:0.5b", "prompt": "x" * (30 * 2**20), "stream": False,
                       "options": {"num_predict": 1}}).encode()

    async def send_all() -> list[int]:
        async with aiohttp.ClientSession() as http:
            async def one() -> int:
                async with http.post(s.url + "/api/generate", data=body,
                                     headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    return r.status
            return list(await asyncio.gather(*(one() for _ in range(10))))

    before = s.rss_bytes()
    statuses = asyncio.run(send_all())
    # 413 is the emulator's own body limit (1 MiB, as aiohttp's default): such a body did reach it.
    assert statuses.count(503) >= 5 and set(statuses) <= {200, 413, 503}, statuses
    assert s.rss_bytes() - before < 300e6


# -- 8. disk full ------------------------------------------------------------------------------------------

def test_a_full_disk_counts_every_row_and_backs_off(stack_factory, tiny_fs: Path) -> None:
    s = stack_factory(db=tiny_fs / "log.duckdb", env={"PREWARM_LOG_BATCH_ROWS": "100"})
    assert s.generate("qwen2.5:0.5b") == 200
    time.sleep(1.5)
    c = json.loads(s.request("GET", "/prewarm/health")[1])["store"]
    before = c["written"] + c["spilled"] + c["queued"] + c["dropped"]
    st = os.statvfs(tiny_fs)
    (tiny_fs / "filler").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - 8 * 1024))
    statuses = _blast(s.url, ["qwen2.5:0.5b"] * 3000, clients=8)
    assert set(statuses) == {200}
    time.sleep(1.5)
    _, raw = s.request("GET", "/prewarm/health")
    c = json.loads(raw)["store"]
    assert c["written"] + c["spilled"] + c["queued"] + c["dropped"] == before + 3000, c
    assert c["queued"] > 0
    (tiny_fs / "filler").unlink()
    rc, err = s.stop()
    assert rc == 0
    writer_lines = [line for line in err.splitlines() if "prewarm.store.writer" in line]
    assert len(writer_lines) <= 8, "\n".join(writer_lines[:20])
    assert not any("writable again" in line for line in writer_lines[:-3])


# -- 9. the smaller items ------------------------------------------------------------------------------------

def test_an_absolute_form_request_target_is_forwarded(stack_factory) -> None:
    s = stack_factory()
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(f"GET http://127.0.0.1:{s.port}/api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert s.rows("SELECT endpoint, status FROM requests ORDER BY ts_start DESC LIMIT 1") == [
        {"endpoint": "/api/version", "status": 200}]
    assert s.rows("SELECT count(*) AS n FROM requests WHERE status <> 200") == [{"n": 0}]


def test_a_malformed_spill_line_is_quarantined_and_serve_starts(tmp_path: Path, stack_factory) -> None:
    db = tmp_path / "spilled.duckdb"
    good = {"id": "good1", "ts_start": "2026-11-25T12:00:00+00:00", "ts_end": "2026-11-25T12:00:01+00:00",
            "model": "qwen2.5:0.5b", "user_id": None, "api": "ollama", "endpoint": "/api/generate", "stream": False,
            "status": 200}
    bad = dict(good, id="bad1", ts_start="yesterday")
    Path(f"{db}.spill.jsonl").write_text("".join(json.dumps({"table": "requests", "row": r}) + "\n"
                                                 for r in (good, bad)))
    try:
        s = stack_factory(db=db)
    except ProcessFailed as exc:
        raise AssertionError(f"serve did not start with a malformed spill line: {str(exc)[-300:]}") from None
    status, raw = s.request("GET", "/prewarm/health")
    assert status == 200
    assert s.rows("SELECT id FROM requests WHERE endpoint = '/api/generate'") == [{"id": "good1"}]
    quarantined = Path(f"{db}.spill.quarantine.jsonl").read_text().splitlines()
    assert len(quarantined) == 1 and "yesterday" in quarantined[0]
    assert json.loads(raw)["store"]["quarantined"] == 1


def test_requests_right_after_an_upstream_restart_are_cold(stack_factory) -> None:
    s = stack_factory(env={"PREWARM_PS_REFRESH": "0.5s"})
    assert s.generate("llama3.2:1b") == 200
    assert s.generate("llama3.2:1b") == 200
    time.sleep(1.0)
    s.restart_emulator(down_s=2.0)
    assert s.generate("llama3.2:1b") == 200
    rows = s.rows("SELECT cold FROM requests WHERE model = 'llama3.2:1b' ORDER BY ts_start")
    assert [r["cold"] for r in rows] == [True, False, True]


MALFORMED = [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\n\r\n",
    b"POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET http://127.0.0.1:1x/abs HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://[::1/abs HTTP/1.1\r\nHost: x\r\n\r\n",
]


def test_malformed_requests_log_one_line_per_cause(stack_factory) -> None:
    s = stack_factory()
    for i in range(140):
        try:
            with socket.create_connection(("127.0.0.1", s.port), timeout=1) as sock:
                sock.sendall(MALFORMED[i % len(MALFORMED)])
                sock.recv(4096)
        except OSError:
            pass  # an answer is not the point here: what the service logs about it is
    try:
        assert s.generate("qwen2.5:0.5b") == 200
    except OSError as exc:
        raise AssertionError(f"the proxy stopped answering after the malformed requests: {exc}") from None
    rc, err = s.stop()
    assert rc == 0
    assert err.count("Traceback") == 0, err[-3000:]
    logged = [line for line in err.splitlines() if "aiohttp" in line or "Error handling request" in line]
    assert len(logged) <= 2 * len(MALFORMED), err[-3000:]


def test_sigterm_answers_every_request_sent_on_keep_alive_connections(stack_factory) -> None:
    s = stack_factory()
    answered, cut, stop = [0], [0], threading.Event()
    lock = threading.Lock()
    body = json.dumps({"model": "qwen2.5:0.5b", "prompt": "hi", "stream": False,
                       "options": {"num_predict": 2}}).encode()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        while not stop.is_set():
            try:
                if conn.sock is None:
                    conn.connect()
            except OSError:
                return  # refused: the service stopped listening, nothing was sent
            try:
                conn.request("POST", "/api/generate", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                with lock:
                    answered[0] += 1
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                with lock:
                    cut[0] += 1
                return
            except OSError:
                return

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    rc, err = s.stop()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert rc == 0, err[-2000:]
    assert cut[0] == 0, f"{cut[0]} requests cut without an answer ({answered[0]} answered)"
    assert answered[0] > 50
    assert s.rows("SELECT count(*) AS n FROM requests WHERE endpoint = '/api/generate'")[0]["n"] == answered[0]


def test_a_whitespace_admin_token_is_refused(tmp_path: Path) -> None:
    env = clean_env() | {"PREWARM_ADMIN_TOKEN": "   "}
    db = tmp_path / "x.duckdb"
    try:
        done = subprocess.run(PREWARM_CMD + ["serve", "--listen", f"0.0.0.0:{free_port()}", "--db", str(db)],
                              capture_output=True, text=True, timeout=20, env=env)
    except subprocess.TimeoutExpired:
        raise AssertionError("serve started with a whitespace-only admin token") from None
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "admin_token" in done.stderr
    assert not db.exists()


def test_off_loopback_ollama_management_routes_need_the_admin_token(stack_factory) -> None:
    s = stack_factory(listen_host="0.0.0.0", env={"PREWARM_ADMIN_TOKEN": "s3cret-token"})
    for method, path in [("DELETE", "/api/delete"), ("POST", "/api/pull"), ("POST", "/api/push"),
                         ("POST", "/api/create"), ("POST", "/api/copy")]:
        status, _ = s.request(method, path, json.dumps({"model": "qwen2.5:0.5b"}).encode())
        assert status == 401, (method, path, status)
        status, _ = s.request(method, path, json.dumps({"model": "qwen2.5:0.5b"}).encode(),
                              headers={"Authorization": "Bearer s3cret-token", "Content-Type": "application/json"})
        assert status != 401, (method, path)
    assert s.generate("qwen2.5:0.5b") == 200  # inference needs no token


def test_health_says_503_with_the_reason_while_the_upstream_is_down(stack_factory) -> None:
    """One health body for the writer and the upstream (issue 15 builds on it)."""
    s = stack_factory(env={"PREWARM_PS_REFRESH": "0.2s"})
    assert s.request("GET", "/prewarm/health")[0] == 200
    s.emu.terminate()
    s.emu.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = s.request("GET", "/prewarm/health")
        if status == 503:
            break
        time.sleep(0.2)
    assert status == 503
    health = json.loads(body)
    assert health["ok"] is False and any("upstream does not answer" in p for p in health["problems"])
    s.emu = s._start_emulator()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and s.request("GET", "/prewarm/health")[0] != 200:
        time.sleep(0.2)
    assert s.request("GET", "/prewarm/health")[0] == 200
