"""End to end with real processes: `prewarm emulate` + `prewarm serve`, both clients, `prewarm sql`
while serving, then SIGTERM: every request must be a row with the right model and user."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import ollama
import openai
import pytest

from prewarm.localproc import PREWARM_CMD, clean_env, free_port, wait_http

PREWARM = PREWARM_CMD


def prewarm_sql(db: Path, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        PREWARM + ["sql", "--db", str(db), "--format", "json", sql],
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )


def test_serve_refuses_off_loopback_without_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prewarm.cli import main

    assert main(["serve", "--listen", "0.0.0.0:0", "--db", str(tmp_path / "x.duckdb")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "admin_token" in err
    assert not (tmp_path / "x.duckdb").exists()


def test_serve_refuses_a_database_another_service_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prewarm.cli import main
    from prewarm.store.discovery import ServiceInfo, write_service_file

    db = tmp_path / "x.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_service_file(str(db), ServiceInfo("http://127.0.0.1:1", holder.pid))
        assert main(["serve", "--listen", "127.0.0.1:0", "--db", str(db)]) == 1
        assert f"already served by pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_serve_and_emulate_processes_log_every_request(tmp_path: Path) -> None:
    env = clean_env()
    emu_port, proxy_port = free_port(), free_port()
    db = tmp_path / "prewarm.duckdb"
    emu = subprocess.Popen(
        PREWARM + ["emulate", "--listen", f"127.0.0.1:{emu_port}", "--vram", "24GB", "--time-scale", "0.001",
                   "--tokens-per-second", "2000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    serve = None
    try:
        wait_http(f"http://127.0.0.1:{emu_port}/api/version", emu)
        serve = subprocess.Popen(
            PREWARM + ["serve", "--upstream", f"http://127.0.0.1:{emu_port}", "--listen", f"127.0.0.1:{proxy_port}",
                       "--db", str(db), "--no-schedule"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        base = f"http://127.0.0.1:{proxy_port}"
        wait_http(base + "/prewarm/health", serve)
        assert json.loads(Path(f"{db}.service.json").read_text())["pid"] == serve.pid

        expected: list[tuple[str, str | None]] = []
        oc = ollama.Client(host=base, headers={"X-Prewarm-User": "alice"})
        r = oc.generate(model="llama3.2:1b", prompt="hi", options={"num_predict": 3})
        assert r.done and r.eval_count == 3
        expected.append(("llama3.2:1b", "alice"))
        text = "".join(p.message.content for p in oc.chat(
            model="qwen2.5:0.5b", messages=[{"role": "user", "content": "x"}], stream=True, options={"num_predict": 3}))
        assert text
        expected.append(("qwen2.5:0.5b", "alice"))

        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        for user in ("bob", "carol"):
            c = client.chat.completions.create(
                model="llama3.2:1b", messages=[{"role": "user", "content": "y"}], max_tokens=2, user=user)
            assert c.choices[0].message.content
            expected.append(("llama3.2:1b", user))
        s = client.chat.completions.create(
            model="qwen2.5:0.5b", messages=[{"role": "user", "content": "z"}], max_tokens=2, stream=True, user="bob")
        assert "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)
        expected.append(("qwen2.5:0.5b", "bob"))

        # The service holds the file; `prewarm sql` must answer through it while it writes.
        deadline = time.monotonic() + 30
        while True:
            out = prewarm_sql(db, "select count(*) AS n from requests")
            assert out.returncode == 0, out.stderr
            if json.loads(out.stdout)[0]["n"] == len(expected) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert json.loads(out.stdout) == [{"n": len(expected)}]
        refused = prewarm_sql(db, "delete from requests")
        assert refused.returncode == 1 and "read-only" in refused.stderr
        status = subprocess.run(PREWARM + ["status", "--db", str(db)], capture_output=True, text=True, env=env,
                                timeout=60)
        assert status.returncode == 0 and "read through the service" in status.stdout

        # More requests right before SIGTERM: they must not be lost in the queue.
        for i in range(5):
            oc.embed(model="nomic-embed-text", input=f"t{i}")
            expected.append(("nomic-embed-text:latest", "alice"))  # logged under its canonical name
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0, serve.stderr.read() if serve.stderr else ""
        serve = None
    finally:
        for proc in (serve, emu):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)

    assert not Path(f"{db}.service.json").exists()
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT model, user_id, status FROM requests ORDER BY ts_start").fetchall()
    con.close()
    assert [(m, u) for m, u, _ in rows] == expected
    assert all(st == 200 for _, _, st in rows)
    out = prewarm_sql(db, "select count(*) AS n from requests")  # direct file path once serve is gone
    assert out.returncode == 0 and json.loads(out.stdout) == [{"n": len(expected)}]
