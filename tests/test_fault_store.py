"""Request-log faults: a full disk, and `prewarm serve` killed with SIGKILL under load.

A database locked by another process is covered in tests/test_store_writer.py
(test_locked_database_spills_and_next_open_loads, test_store_reconnects_when_lock_is_released);
SIGTERM losing nothing in tests/test_proxy_serve.py (test_serve_and_emulate_processes_log_every_request).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from prewarm.config import Settings
from prewarm.records import RequestEvent
from prewarm.store import Store, spill_path

ROOT = Path(__file__).resolve().parents[1]


def event(i: int) -> RequestEvent:
    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=i)
    return RequestEvent(id=f"r{i}", ts_start=now, ts_end=now, model="llama3.2:1b", user_id="alice", api="ollama",
                        endpoint="/api/chat", stream=True, status=200, upstream="http://127.0.0.1:11434")


def settings(**kw) -> Settings:
    return Settings(**({"log_flush_interval": 0.05, "log_batch_rows": 100} | kw))


def fill(fs: Path, leave: int) -> Path:
    st = os.statvfs(fs)
    filler = fs / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


async def test_disk_full_keeps_rows_queued_then_writes_them_when_space_returns(tiny_fs: Path) -> None:
    db = tiny_fs / "log.duckdb"
    store = Store(str(db), settings(log_flush_interval=0.05))
    store.open()
    for i in range(10):
        store.put(event(i))
    await store.flush()
    filler = fill(tiny_fs, leave=16 * 1024)
    for i in range(10, 1010):
        store.put(event(i))
    await store.flush()
    c = store.counters
    assert c["written"] == 10 and c["dropped"] == 0
    assert c["queued"] + c["spilled"] == 1000 and c["queued"] > 0  # neither the WAL nor the spill had room

    filler.unlink()
    store.put(event(5000))
    await store.flush()  # reconnects, loads anything spilled, writes the queued rows
    await store.flush()
    _, rows = await store.query("SELECT count(*), count(DISTINCT id) FROM requests")
    assert rows == [(1011, 1011)]
    assert store.counters["dropped"] == 0 and store.counters["queued"] == 0
    await store.close()
    assert not spill_path(db).exists()


async def test_disk_full_at_shutdown_drops_and_counts_instead_of_hanging(tiny_fs: Path) -> None:
    db = tiny_fs / "log.duckdb"
    store = Store(str(db), settings(log_flush_interval=0.05))
    store.open()
    store.put(event(0))
    await store.flush()
    fill(tiny_fs, leave=16 * 1024)
    for i in range(1, 501):
        store.put(event(i))
    await store.close()
    c = store.counters
    assert c["written"] + c["spilled"] + c["dropped"] == 501
    assert c["dropped"] > 0 and c["queued"] == 0


@pytest.mark.slow
def test_sigkill_under_load_loses_only_the_unflushed_tail() -> None:
    """bench/kill_loss.py on a short run: every request answered more than log_flush_interval (+1 s for the
    write) before the SIGKILL has its row; what is lost is at most what was answered in that last window."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "kill_loss.py"), "--duration", "2.5", "--clients", "8",
                          "--json"], capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert out.returncode in (0, 1), out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["answered_before_kill"] > 0
    assert report["lost_before_window"] == 0, report
    assert report["rows_lost"] <= report["answered_in_last_window"], report
    assert report["rows_of_answered"] + report["rows_lost"] == report["answered_before_kill"]
