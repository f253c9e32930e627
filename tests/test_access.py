"""Access: admin routes and /metrics need the token off loopback (a real `prewarm serve` listening on
0.0.0.0, reached over 127.0.0.1 so no traffic leaves loopback), the token is compared with hmac.compare_digest,
`prewarm sql` stays read-only on both paths, API keys are only kept hashed, and neither the logs nor the database hold a
secret after a run.

Already covered elsewhere: the guard in-process (tests/test_proxy_app.py::test_admin_guard_off_loopback,
tests/test_prewarmer.py::test_admin_routes_need_token_off_loopback), serve refusing to start off
loopback without a token (tests/test_proxy_serve.py), DELETE/CREATE/INSERT/COPY/ATTACH/SET/several
statements refused by the file path (tests/test_sql_commands.py).
"""

from __future__ import annotations

import hmac
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import pytest
from proxy_helpers import idle_tracker

from prewarm.admin import guard as admin_guard
from prewarm.admin import make_service_app
from prewarm.cli import main
from prewarm.config import Settings, hash_api_key, load_settings
from prewarm.localproc import PREWARM_CMD, clean_env, free_port
from prewarm.store import ReadOnlyError, Store, check_read_only

PREWARM = PREWARM_CMD
TOKEN = "tok-3f9a7c1e5b2d4e6f8a0b"
API_KEY = "sk-test-9d8c7b6a5f4e3d2c1b0a"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

WRITES = [
    "COPY requests TO '/tmp/prewarm-leak.csv'", "COPY (SELECT 1) TO '/tmp/prewarm-leak.csv'",
    "ATTACH ':memory:' AS other", "DETACH other", "INSTALL httpfs", "LOAD httpfs", "PRAGMA enable_profiling",
    "SET threads = 1", "RESET threads", "CALL pragma_version()", "SELECT 1; SELECT 2", "CHECKPOINT",
    "VACUUM", "UPDATE requests SET model = 'x'", "DROP VIEW v_heat", "ALTER TABLE requests ADD COLUMN x INT",
    "CREATE MACRO m(a) AS a", "EXPORT DATABASE '/tmp/prewarm-export'", "IMPORT DATABASE '/tmp/prewarm-export'",
    "USE memory", "BEGIN", "EXPLAIN ANALYZE DELETE FROM requests", "PREPARE p AS SELECT 1", "EXECUTE p",
]


def call(url: str, method: str = "GET", token: str | None = None, body: dict | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with OPENER.open(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        try:
            with OPENER.open(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # up (401 without the token)
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


@pytest.mark.slow
def test_off_loopback_admin_needs_token_and_no_secret_reaches_logs_or_db(tmp_path: Path) -> None:
    # Listening on every interface is off loopback (the token is required); the test still talks to it
    # over 127.0.0.1 only, so no traffic leaves loopback.
    port, emu_port = free_port(), free_port()
    env = clean_env()
    config = tmp_path / "prewarm.toml"
    config.write_text(f'admin_token = "{TOKEN}"\n[api_keys]\n"{API_KEY}" = "alice"\n')
    db = tmp_path / "a.duckdb"
    emu = subprocess.Popen(PREWARM + ["emulate", "--listen", f"127.0.0.1:{emu_port}", "--time-scale", "0.001",
                                      "--tokens-per-second", "2000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    serve = subprocess.Popen(
        PREWARM + ["serve", "--config", str(config), "--upstream", f"http://127.0.0.1:{emu_port}",
                   "--listen", f"0.0.0.0:{port}", "--db", str(db), "--no-schedule"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"http://127.0.0.1:{emu_port}/api/version", emu)
        wait_up(base + "/prewarm/health", serve)
        admin_calls = [("GET", "/prewarm/health", None), ("GET", "/metrics", None), ("GET", "/prewarm/status", None),
                       ("POST", "/prewarm/sql", {"sql": "select count(*) from requests"}),
                       ("POST", "/prewarm/pin/qwen2.5:0.5b", None), ("DELETE", "/prewarm/pin/qwen2.5:0.5b", None),
                       ("POST", "/prewarm/unload/qwen2.5:0.5b", None), ("POST", "/prewarm/load/qwen2.5:0.5b", None),
                       ("GET", "/prewarm/nothing", None)]
        for method, path, body in admin_calls:
            for token in (None, "", "wrong", TOKEN + "x", TOKEN[:-1]):
                status, text = call(base + path, method, token, body)
                assert status == 401 and b"admin token required" in text, (method, path, token, status)
            status, _ = call(base + path, method, TOKEN, body)
            assert status == (404 if path == "/prewarm/nothing" else 200), (method, path, status)
        # The proxy path needs no admin token; the API key maps to its user.
        status, _ = call(base + "/api/generate", "POST", API_KEY,
                         {"model": "qwen2.5:0.5b", "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
        assert status == 200
        status, _ = call(base + "/api/generate", "POST", TOKEN, {"model": "qwen2.5:0.5b", "prompt": "x"})
        assert status == 200
        # The CLI reads through the service with the token from the config file.
        out = subprocess.run(PREWARM + ["sql", "--config", str(config), "--db", str(db), "--format", "json",
                                        "select user_id from requests order by ts_start"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert [r["user_id"] for r in json.loads(out.stdout)] == ["alice", None]
        serve.send_signal(signal.SIGTERM)
        log_text = serve.communicate(timeout=60)[0]
    finally:
        for p in (serve, emu):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    assert serve.returncode == 0
    assert TOKEN not in log_text and API_KEY not in log_text
    con = duckdb.connect(str(db), read_only=True)
    dump = []
    for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
        dump.append(repr(con.execute(f'SELECT * FROM "{table}"').fetchall()))
    con.close()
    text = "\n".join(dump)
    assert "alice" in text  # the dump is real
    assert TOKEN not in text and API_KEY not in text and hash_api_key(API_KEY) not in text


async def test_token_is_compared_with_hmac_compare_digest(aiohttp_client, tmp_path: Path, monkeypatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(admin_guard.hmac, "compare_digest", spy)
    settings = Settings(db=str(tmp_path / "x.duckdb"), listen="10.1.2.3:11435", admin_token=TOKEN)
    store = Store(settings.db, settings)
    store.open()

    client = await aiohttp_client(make_service_app(settings, store, idle_tracker()))
    assert (await client.get("/prewarm/health", headers={"Authorization": "Bearer nope"})).status == 401
    assert (await client.get("/prewarm/health", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200
    assert seen == [(b"Bearer nope", f"Bearer {TOKEN}".encode()), (f"Bearer {TOKEN}".encode(),) * 2]
    await client.close()
    await store.close()


@pytest.mark.parametrize("sql", WRITES)
def test_read_only_guard_refuses(sql: str) -> None:
    with pytest.raises(ReadOnlyError):
        check_read_only(sql)


async def test_service_sql_path_refuses_writes_and_the_data_is_untouched(aiohttp_client, tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "x.duckdb"))
    store = Store(settings.db, settings)
    store.open()

    client = await aiohttp_client(make_service_app(settings, store, idle_tracker()))
    for sql in WRITES:
        r = await client.post("/prewarm/sql", json={"sql": sql})
        assert r.status == 400 and (await r.json())["error"], sql
    r = await client.post("/prewarm/sql", json={"sql": "select count(*) from duckdb_views() where not internal"})
    assert (await r.json())["rows"] == [[4]]  # v_heat, v_cold_starts, v_forecast_vs_actual, pins
    await client.close()
    await store.close()
    assert not Path("/tmp/prewarm-leak.csv").exists() and not Path("/tmp/prewarm-export").exists()


@pytest.mark.parametrize("sql", ["COPY requests TO 'leak.csv'", "INSTALL httpfs", "PRAGMA enable_profiling",
                                 "CALL pragma_version()", "CHECKPOINT", "EXPORT DATABASE 'exp'"])
def test_file_path_refuses_more_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: str,
                                       monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "x.duckdb"
    s = Store(str(db), Settings(db=str(db)))
    s.open()
    s.close_sync()
    assert main(["sql", "--db", str(db), sql]) == 1
    assert capsys.readouterr().err.startswith("prewarm sql: ")
    assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "exp").exists()


def test_api_keys_only_kept_hashed(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[api_keys]\n"{API_KEY}" = "alice"\n"{hash_api_key("other")}" = "bob"\n')
    s = load_settings(config, environ={})
    assert set(s.api_keys) == {hash_api_key(API_KEY), hash_api_key("other")}
    assert API_KEY not in repr(s) and all(k.startswith("sha256:") for k in s.api_keys)
    assert TOKEN not in repr(Settings(admin_token=TOKEN))  # a logged Settings never shows the token
    assert s.user_for_api_key(API_KEY) == "alice" and s.user_for_api_key("other") == "bob"
