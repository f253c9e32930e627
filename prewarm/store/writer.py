"""The one DuckDB connection of the serve process and its buffered writer.

Requests must never wait for the database: `put` appends to a bounded in-memory
queue and returns. A background thread (not the event loop) drains the queue in
batches, every `log_flush_interval` seconds or `log_batch_rows` rows, and inserts
each batch as one pandas DataFrame (`INSERT ... BY NAME SELECT * FROM df`), which
DuckDB takes at ~200k rows/s where row-by-row inserts manage ~1k rows/s.

When the database cannot be written (another process holds its lock, the disk is
full) the batch goes to `<db>.spill.jsonl` beside it and the thread keeps trying
to reconnect; spilled rows are loaded back the next time the file opens. When the
spill file cannot be written either (the disk is full), the batch goes back to the
head of the in-memory queue and waits for the next flush. Nothing accepted by
`put` is lost by `close()` while the file or the spill can be written; only a full
queue drops rows (or a shutdown with neither writable), and every row is counted
as written, spilled or dropped.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import operator
import os
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from prewarm.config import Settings
from prewarm.records import RequestEvent
from prewarm.store.readonly import execute_read
from prewarm.store.schema import migrate

log = logging.getLogger(__name__)

REQUEST_COLUMNS = [f.name for f in fields(RequestEvent)]
_event_tuple = operator.attrgetter(*REQUEST_COLUMNS)
# Tables whose rows replace an existing row with the same key instead of adding one.
UPSERT_KEYS = {"model_catalog": "model"}
WRITABLE_TABLES = {"requests", "forecasts", "training_runs", "prewarm_actions", "model_catalog"}
MAX_INSERT_ROWS = 50_000


class StoreUnavailable(RuntimeError):
    """The database file cannot be opened now (locked by another process, unreadable)."""


def spill_path(db_path: str | os.PathLike[str]) -> Path:
    return Path(f"{db_path}.spill.jsonl")


class _Barrier:
    """Queued behind the rows put before it; set once they are written or spilled."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class Store:
    def __init__(self, path: str, settings: Settings) -> None:
        self.path = str(path)
        self.settings = settings
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._db_lock = threading.Lock()  # guards the connection object itself
        self._con: duckdb.DuckDBPyConnection | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._unavailable_reason: str | None = None
        self.written = 0
        self.spilled = 0
        self.dropped = 0
        self.loaded_from_spill = 0
        self._spill_error: str | None = None

    # -- lifecycle -------------------------------------------------------------

    def open(self) -> None:
        """Connect, migrate, load spilled rows and start the writer thread.

        A database locked by another process does not stop the service: rows spill
        until the file can be opened, which the writer retries on every flush.
        """
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connect()
        except StoreUnavailable as exc:
            log.warning("request log: %s; rows spill to %s until it can be opened", exc, spill_path(self.path))
        self._thread = threading.Thread(target=self._run, name="prewarm-store-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        try:
            con = duckdb.connect(self.path)
        except duckdb.Error as exc:
            self._unavailable_reason = _one_line(exc)
            raise StoreUnavailable(f"cannot open {self.path}: {self._unavailable_reason}") from None
        try:
            migrate(con)
            self._load_spill(con)
        except BaseException:
            con.close()
            raise
        with self._db_lock:
            self._con = con
        self._unavailable_reason = None

    async def close(self) -> None:
        """Write everything queued, then release the file."""
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._db_lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    async def flush(self) -> None:
        """Wait until every row put so far is written (or spilled)."""
        barrier = _Barrier()
        self._queue.append(barrier)
        self._wake.set()
        await asyncio.to_thread(barrier.done.wait)

    # -- writing ---------------------------------------------------------------

    def put(self, event: RequestEvent) -> None:
        """Queue one request row; never blocks. A full queue drops the row and counts it."""
        q = self._queue
        if len(q) >= self.settings.log_queue_max:
            self.dropped += 1
            return
        q.append(event)
        if len(q) >= self.settings.log_batch_rows:
            self._wake.set()

    def put_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Queue rows for another table (same buffered path); JSON columns may be dicts."""
        if table not in WRITABLE_TABLES:
            raise ValueError(f"unknown table {table!r}; one of {sorted(WRITABLE_TABLES)}")
        q = self._queue
        for row in rows:
            if len(q) >= self.settings.log_queue_max:
                self.dropped += 1
                continue
            q.append((table, row))
        if len(q) >= self.settings.log_batch_rows:
            self._wake.set()

    @property
    def counters(self) -> dict[str, int]:
        return {
            "written": self.written,
            "spilled": self.spilled,
            "dropped": self.dropped,
            "queued": sum(1 for item in list(self._queue) if not isinstance(item, _Barrier)),
            "loaded_from_spill": self.loaded_from_spill,
        }

    @property
    def available(self) -> bool:
        return self._con is not None

    def _run(self) -> None:
        interval = max(0.01, float(self.settings.log_flush_interval))
        while True:
            self._wake.wait(timeout=interval)
            self._wake.clear()
            stopping = self._stopping
            progressed = self._drain()
            if stopping and self._queue and not progressed:
                # Shutting down with neither the file nor the spill writable: nothing can keep these rows.
                n = sum(1 for item in self._queue if not isinstance(item, _Barrier))
                log.error("request log: %d rows could be neither written nor spilled at shutdown; dropped", n)
                self.dropped += n
                for item in self._queue:
                    if isinstance(item, _Barrier):
                        item.done.set()
                self._queue.clear()
            if stopping and not self._queue:
                return

    def _drain(self) -> bool:
        """Write what is queued; False when a batch could be neither written nor spilled (it stays queued)."""
        if self._con is None:
            try:
                self._connect()
                log.warning("request log: %s is writable again", self.path)
            except StoreUnavailable:
                pass
            except Exception as exc:  # a failing migration or spill load (disk still full) must not kill the thread
                if self._unavailable_reason != _one_line(exc):
                    log.warning("request log: reopening %s failed: %s", self.path, _one_line(exc))
                self._unavailable_reason = _one_line(exc)
        q = self._queue
        while q:
            batch: list[Any] = []
            barriers: list[_Barrier] = []
            while q and len(batch) < MAX_INSERT_ROWS:
                item = q.popleft()
                if isinstance(item, _Barrier):
                    barriers.append(item)
                    break
                batch.append(item)
            if batch and not self._write(batch):
                self._requeue(batch)
                for b in barriers:
                    b.done.set()
                return False
            for b in barriers:
                b.done.set()
        return True

    def _requeue(self, batch: list[Any]) -> None:
        """Put an unwritable batch back at the head of the queue (disk full: the spill file failed too).

        The rows wait in memory for the next flush, so space freed while the service
        runs loses nothing; only what does not fit under log_queue_max is dropped
        (the oldest rows, counted).
        """
        room = max(0, self.settings.log_queue_max - len(self._queue))
        keep = batch[len(batch) - room:] if room < len(batch) else batch
        self.dropped += len(batch) - len(keep)
        self._queue.extendleft(reversed(keep))

    def _write(self, batch: list[Any]) -> bool:
        """Insert one batch, else spill it; False when neither worked."""
        events = [item for item in batch if isinstance(item, RequestEvent)]
        other: dict[str, list[dict[str, Any]]] = {}
        for item in batch:
            if not isinstance(item, RequestEvent):
                other.setdefault(item[0], []).append(item[1])
        frames: list[tuple[str, pd.DataFrame]] = []
        if events:
            frames.append(("requests", pd.DataFrame([_event_tuple(e) for e in events], columns=REQUEST_COLUMNS)))
        for table, rows in other.items():
            frames.append((table, _frame(table, rows)))
        try:
            with self._db_lock:
                if self._con is None:
                    raise StoreUnavailable(self._unavailable_reason or "database not open")
                _insert_atomically(self._con, frames)
            self.written += len(batch)
            return True
        except Exception as exc:
            log.warning("request log: writing %d rows failed (%s); spilling", len(batch), _one_line(exc))
            self._disconnect_after_failure()
            return self._spill(events, other)

    def _disconnect_after_failure(self) -> None:
        """A failed write may leave DuckDB invalidated (disk full): reopen on the next flush."""
        with self._db_lock:
            if self._con is not None:
                try:
                    self._con.close()
                except duckdb.Error:
                    pass
                self._con = None

    def _spill(self, events: list[RequestEvent], other: dict[str, list[dict[str, Any]]]) -> bool:
        lines = [_spill_line("requests", dict(zip(REQUEST_COLUMNS, _event_tuple(e)))) for e in events]
        for table, rows in other.items():
            lines.extend(_spill_line(table, row) for row in rows)
        path = spill_path(self.path)
        try:
            size = path.stat().st_size if path.exists() else 0
        except OSError:
            size = 0
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
            self.spilled += len(lines)
            self._spill_error = None
            return True
        except OSError as exc:
            if self._spill_error != str(exc):
                log.error("request log: cannot spill %d rows to %s (%s); they stay queued in memory",
                          len(lines), path, exc)
            self._spill_error = str(exc)
            _truncate(path, size)  # a half-written batch would be loaded back twice once it is retried
            return False

    def _load_spill(self, con: duckdb.DuckDBPyConnection) -> None:
        """Insert rows spilled by an earlier run, in one transaction, then remove the file."""
        path = spill_path(self.path)
        if not path.exists():
            return
        per_table: dict[str, list[dict[str, Any]]] = {}
        bad = 0
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    item = json.loads(line)
                    per_table.setdefault(item["table"], []).append(item["row"])
                except (ValueError, KeyError, TypeError):
                    bad += 1  # a line cut short by a crash while spilling
        unknown = set(per_table) - WRITABLE_TABLES
        for table in unknown:
            bad += len(per_table.pop(table))
        _insert_atomically(con, [(t, _frame(t, rows)) for t, rows in per_table.items()])
        path.unlink()
        n = sum(len(rows) for rows in per_table.values())
        self.loaded_from_spill += n
        log.warning("request log: loaded %d spilled rows from %s (%d unreadable lines skipped)", n, path, bad)

    # -- reading ---------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._db_lock:
            if self._con is None:
                raise StoreUnavailable(
                    f"the database {self.path} is not open ({self._unavailable_reason or 'closed'})"
                )
            return self._con.cursor()

    def _query_sync(self, sql: str, params: Any = None) -> tuple[list[str], list[tuple]]:
        cur = self._cursor()
        try:
            return execute_read(cur, sql, params)
        finally:
            cur.close()

    async def query(self, sql: str, params: Any = None) -> tuple[list[str], list[tuple]]:
        """Run one read-only statement on its own cursor, off the event loop."""
        return await asyncio.to_thread(self._query_sync, sql, params)

    def read_df(self, sql: str, params: Any = None) -> pd.DataFrame:
        """A read-only query as a DataFrame, for worker threads (training, planning)."""
        columns, rows = self._query_sync(sql, params)
        return pd.DataFrame(rows, columns=columns)


def _frame(table: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    clean = [{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in row.items()} for row in rows]
    key = UPSERT_KEYS.get(table)
    if key:  # INSERT OR REPLACE refuses two rows with one key in a single statement
        clean = list({row.get(key): row for row in clean}.values())
    return pd.DataFrame(clean)


def _insert_atomically(con: duckdb.DuckDBPyConnection, frames: list[tuple[str, pd.DataFrame]]) -> None:
    """All frames or none, so a batch that fails half-way is spilled once, not half-duplicated."""
    con.execute("BEGIN")
    try:
        _insert_frames(con, frames)
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # an invalidated connection has nothing left to roll back
        raise


def _insert_frames(con: duckdb.DuckDBPyConnection, frames: list[tuple[str, pd.DataFrame]]) -> None:
    for table, df in frames:
        if df.empty:
            continue
        verb = "INSERT OR REPLACE INTO" if table in UPSERT_KEYS else "INSERT INTO"
        con.register("_prewarm_batch", df)
        try:
            con.execute(f"{verb} {table} BY NAME SELECT * FROM _prewarm_batch")
        finally:
            con.unregister("_prewarm_batch")


def _truncate(path: Path, size: int) -> None:
    try:
        with open(path, "r+b") as fh:
            fh.truncate(size)
    except OSError:
        pass


def _spill_line(table: str, row: dict[str, Any]) -> str:
    return json.dumps({"table": table, "row": row}, default=_json_default) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
