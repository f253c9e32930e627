"""`prewarm sql` / `prewarm status`: output formats, read-only guard, file and service read paths."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
from pathlib import Path

import pytest
from proxy_helpers import idle_tracker
from test_store_writer import event

from prewarm.admin import make_service_app
from prewarm.cli import main
from prewarm.config import Settings
from prewarm.store import (
    ReadOnlyError,
    ServiceInfo,
    Store,
    check_read_only,
    remove_service_file,
    service_file,
    write_service_file,
)


def make_db(path: Path, n: int = 5) -> None:
    store = Store(str(path), Settings())
    store.open()
    for i in range(n):
        store.put(event(i, model="a" if i % 2 else "b", user=f"u{i}"))
    store.put_rows(
        "prewarm_actions",
        [{"ts": dt.datetime.now(dt.UTC), "model": "a", "action": "load", "reason": "test", "ok": True}],
    )
    store.close_sync()


def test_csv_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "log.duckdb"
    make_db(db)
    sql = "SELECT model, count(*) AS n, min(ts_start) AS first FROM requests GROUP BY model ORDER BY model"

    assert main(["sql", "--db", str(db), "--format", "csv", sql]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["model", "n", "first"]
    assert [r[:2] for r in rows[1:]] == [["a", "2"], ["b", "3"]]
    assert rows[2][2].startswith("2026-11-25T12:00:00")

    assert main(["sql", "--db", str(db), "--format", "json", sql]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0] == {"model": "a", "n": 2, "first": "2026-11-25T12:00:01+00:00"}

    assert main(["sql", "--db", str(db), "select null as x, 1.5 as y"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["x", "y"]
    assert out[2].split() == ["NULL", "1.5"]
    assert out[-1] == "(1 row)"


@pytest.mark.parametrize(
    "sql",
    ["DELETE FROM requests", "CREATE TABLE t (a INT)", "INSERT INTO requests (id) VALUES ('x')",
     "SELECT 1; DROP TABLE requests", "COPY requests TO 'x.csv'", "ATTACH 'other.db'", "SET threads = 1"],
)
def test_writes_refused_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: str) -> None:
    db = tmp_path / "log.duckdb"
    make_db(db, 1)
    assert main(["sql", "--db", str(db), sql]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prewarm sql: ")
    assert main(["sql", "--db", str(db), "select count(*) from requests", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "1"


def test_read_only_checker_accepts_reads() -> None:
    for sql in ("select 1", "with a as (select 1) select * from a", "show tables", "describe requests",
                "explain select 1", "from requests"):
        assert check_read_only(sql)
    with pytest.raises(ReadOnlyError, match="does not parse"):
        check_read_only("selec 1")
    with pytest.raises(ReadOnlyError, match="no SQL"):
        check_read_only("  ")


def test_missing_database_and_bad_sql(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--db", str(tmp_path / "none.duckdb"), "select 1"]) == 1
    assert "no database at" in capsys.readouterr().err
    db = tmp_path / "log.duckdb"
    make_db(db, 1)
    assert main(["sql", "--db", str(db), "select nope from requests"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err


def test_status_from_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "log.duckdb"
    make_db(db)
    assert main(["status", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "service: not running" in out
    assert "Requests per model" in out and "Recent prewarm actions" in out
    line_b = next(line for line in out.splitlines() if line.startswith("b "))
    assert line_b.split()[3:5] == ["3", "1"]  # all-time requests and cold starts for b


async def test_sql_and_status_through_running_service(aiohttp_server, tmp_path: Path, capsys) -> None:
    """While a service holds the file, the CLI reads through POST /prewarm/sql."""
    db = tmp_path / "log.duckdb"
    settings = Settings(db=str(db), upstream="http://127.0.0.1:9", log_flush_interval=0.05)
    store = Store(str(db), settings)
    store.open()
    for i in range(4):
        store.put(event(i))
    await store.flush()

    app = make_service_app(settings, store, idle_tracker())
    server = await aiohttp_server(app)
    write_service_file(str(db), ServiceInfo(str(server.make_url("")).rstrip("/"), os.getpid()))
    try:
        rc = await asyncio.to_thread(main, ["sql", "--db", str(db), "--format", "json", "select count(*) AS n from requests"])
        assert rc == 0
        assert json.loads(capsys.readouterr().out) == [{"n": 4}]
        rc = await asyncio.to_thread(main, ["sql", "--db", str(db), "drop table requests"])
        assert rc == 1 and "read-only" in capsys.readouterr().err
        rc = await asyncio.to_thread(main, ["status", "--db", str(db)])
        out = capsys.readouterr().out
        assert rc == 0 and "read through the service" in out and "4 written" in out
    finally:
        remove_service_file(str(db), os.getpid())
        assert not service_file(db).exists()
        await server.close()
        await store.close()


async def test_service_sql_route_validates(aiohttp_client, tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "x.duckdb"))
    store = Store(settings.db, settings)
    store.open()

    client = await aiohttp_client(make_service_app(settings, store, idle_tracker()))
    r = await client.post("/prewarm/sql", data=b"not json")
    assert r.status == 400
    r = await client.post("/prewarm/sql", json={"sql": "select 1 as a, 'x' as b, now() as t"})
    body = await r.json()
    assert body["columns"] == ["a", "b", "t"] and body["rows"][0][:2] == [1, "x"]
    r = await client.post("/prewarm/sql", json={"sql": "delete from requests"})
    assert r.status == 400 and "read-only" in (await r.json())["error"]
    r = await client.get("/prewarm/nothing-here")
    assert r.status == 404
    await client.close()
    await store.close()
