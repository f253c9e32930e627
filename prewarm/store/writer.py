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

One bad row must never cost the others: a batch that DuckDB or pandas refuses for
its data (not for the disk) is split until the offending rows are found, and only
those are dropped, counted by reason. The thread itself survives any exception
(it logs, backs off and goes on); should it die anyway, the next `put` burst or
health check starts a new one, and `healthy` says so in the meantime. A disk that
stays full is retried with a doubling back-off (up to `RETRY_MAX_S`) rather than on
every wake-up, and each state change is logged once.
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
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from prewarm.config import Settings
from prewarm.errors import StoreUnavailable as StoreUnavailable
from prewarm.errors import one_line
from prewarm.records import RequestEvent
from prewarm.store.readonly import apply_sandbox, execute_read
from prewarm.store.schema import migrate

log = logging.getLogger(__name__)

REQUEST_COLUMNS = [f.name for f in fields(RequestEvent)]
_event_tuple = operator.attrgetter(*REQUEST_COLUMNS)
# Tables whose rows replace an existing row with the same key instead of adding one.
UPSERT_KEYS = {"model_catalog": "model"}
WRITABLE_TABLES = {"requests", "forecasts", "training_runs", "prewarm_actions", "model_catalog", "pin_events"}
MAX_INSERT_ROWS = 50_000
# Waiting for a flush longer than this means the writer is stuck: callers get StoreUnavailable, not a hang.
FLUSH_TIMEOUT_S = 30.0
# How long close waits for reads still running in worker threads (interrupted) before it gives up on them.
CLOSE_WAIT_S = 10.0
# Longest pause between retries of a database and spill that are both unwritable (disk full).
RETRY_MAX_S = 30.0
# Errors that are about a batch's data, not the disk: the batch is split to find the rows at fault (pandas
# and pyarrow raise the Python ones while building a frame, DuckDB the others while casting it). Anything
# else (I/O, an invalidated connection, a schema that does not match) spills the batch instead.
_DATA_ERRORS: tuple[type[BaseException], ...] = (duckdb.DataError, duckdb.IntegrityError, ValueError, TypeError)


def _is_data_error(exc: BaseException) -> bool:
    """Whether `exc` is about the rows themselves (DuckDB reports a Python value it cannot convert, such as
    a lone surrogate, as an invalid-input error)."""
    if isinstance(exc, _DATA_ERRORS):
        return True
    return isinstance(exc, duckdb.InvalidInputException) and "Conversion" in str(exc)



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
        self.quarantined = 0
        self.drop_reasons: collections.Counter[str] = collections.Counter()
        self.writer_restarts = 0
        self._user_cursors: set[duckdb.DuckDBPyConnection] = set()  # interrupted by close()
        self._in_batch = 0  # rows taken off the queue by the batch being written now
        self._beat = time.monotonic()  # the writer thread's last sign of life
        self._retry_at = 0.0  # with both the file and the spill unwritable: no new attempt before this
        self._retry_delay = 0.0
        self._retry_now = False
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
        self._start_thread()

    def _start_thread(self) -> None:
        self._beat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="prewarm-store-writer", daemon=True)
        self._thread.start()

    def ensure_writer(self) -> bool:
        """Start a new writer thread if the last one died; True when one had to be started."""
        thread = self._thread
        if thread is None or thread.is_alive() or self._stopping:
            return False
        log.error("request log: the writer thread died; starting a new one")
        self.writer_restarts += 1
        self._start_thread()
        return True

    @property
    def healthy(self) -> tuple[bool, str | None]:
        """(True, None) while the writer runs and keeps up; else False and why, for /prewarm/health."""
        thread = self._thread
        if thread is None:
            return False, "the request log writer is not running"
        if not thread.is_alive():
            return False, "the request log writer thread died"
        stuck = time.monotonic() - self._beat
        if stuck > max(FLUSH_TIMEOUT_S, 5 * float(self.settings.log_flush_interval)):
            return False, f"the request log writer has not made progress for {stuck:.0f} s"
        return True, None

    def _connect(self) -> None:
        try:
            con = duckdb.connect(self.path)
        except duckdb.Error as exc:
            self._unavailable_reason = one_line(exc)
            raise StoreUnavailable(f"cannot open {self.path}: {self._unavailable_reason}") from None
        try:
            migrate(con)
            self._load_spill(con)
            # Users' SQL runs on cursors of this connection: no file access, no extensions, settings locked.
            apply_sandbox(con)
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
        self._interrupt_reads()  # a user's long query must not hold the shutdown
        self.ensure_writer()  # a dead writer would leave the queue unwritten
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        left = self._count_rows(self._queue)
        if left:  # the writer could not run to the end: these rows are lost, and say so
            self._drop(left, "writer stopped before writing them")
            self._queue.clear()
        with self._db_lock:
            con, self._con = self._con, None  # no new cursor from here on (_cursor says the store is closed)
        if con is not None:
            self._close_when_idle(con)

    def _interrupt_reads(self) -> None:
        for cur in list(self._user_cursors):
            try:
                cur.interrupt()
            except duckdb.Error:
                pass

    def _close_when_idle(self, con: duckdb.DuckDBPyConnection) -> None:
        """Close the connection once no cursor of it is mid-call. DuckDB refuses to close a connection busy in
        another thread (a read that a cancelled task left running in its worker thread): interrupt the reads,
        and retry for a bounded time rather than fail the shutdown or wait on a query forever."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        while True:
            self._interrupt_reads()
            try:
                con.close()
                return
            except duckdb.ResourceInUseException:
                if time.monotonic() > deadline:
                    log.error("request log: the database stayed busy %.0f s after the reads were interrupted; "
                              "leaving its connection to the process exit", CLOSE_WAIT_S)
                    return
                time.sleep(0.02)

    async def flush(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Wait until every row put so far is written (or spilled); StoreUnavailable after `timeout` seconds."""
        self.ensure_writer()
        self._retry_now = True  # a reader asks for its rows: try now, whatever the back-off says
        barrier = _Barrier()
        self._queue.append(barrier)
        self._wake.set()
        if not await asyncio.to_thread(barrier.done.wait, timeout):
            raise StoreUnavailable(f"the request log writer did not flush within {timeout:.0f} s")

    # -- writing ---------------------------------------------------------------

    def put(self, event: RequestEvent) -> None:
        """Queue one request row; never blocks. A full queue drops the row and counts it."""
        q = self._queue
        if len(q) >= self.settings.log_queue_max:
            self._drop(1, "queue full")
            return
        q.append(event)
        if len(q) >= self.settings.log_batch_rows:
            self._wake.set()
            self.ensure_writer()

    def put_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Queue rows for another table (same buffered path); JSON columns may be dicts."""
        if table not in WRITABLE_TABLES:
            raise ValueError(f"unknown table {table!r}; one of {sorted(WRITABLE_TABLES)}")
        q = self._queue
        for row in rows:
            if len(q) >= self.settings.log_queue_max:
                self._drop(1, "queue full")
                continue
            q.append((table, row))
        if len(q) >= self.settings.log_batch_rows:
            self._wake.set()
            self.ensure_writer()

    def _drop(self, n: int, reason: str) -> None:
        self.dropped += n
        self.drop_reasons[reason] += n

    @property
    def counters(self) -> dict[str, int]:
        return {
            "written": self.written,
            "spilled": self.spilled,
            "dropped": self.dropped,
            "queued": self._count_rows(list(self._queue)) + self._in_batch,
            "loaded_from_spill": self.loaded_from_spill,
            "quarantined": self.quarantined,
            "writer_restarts": self.writer_restarts,
        }

    @staticmethod
    def _count_rows(items: Any) -> int:
        return sum(1 for item in items if not isinstance(item, _Barrier))

    @property
    def available(self) -> bool:
        return self._con is not None

    def _run(self) -> None:
        interval = max(0.01, float(self.settings.log_flush_interval))
        while True:
            self._beat = time.monotonic()
            self._wake.wait(timeout=interval)
            self._wake.clear()
            self._beat = time.monotonic()
            stopping = self._stopping
            try:
                progressed = self._drain(stopping)
            except Exception:  # a bug here must cost at most this pass, never the thread and every later row
                log.exception("request log: the writer failed; retrying")
                progressed = False
            if stopping and self._queue and not progressed:
                # Shutting down with neither the file nor the spill writable: nothing can keep these rows.
                n = self._count_rows(self._queue)
                log.error("request log: %d rows could be neither written nor spilled at shutdown; dropped", n)
                self._drop(n, "neither the database nor the spill file writable at shutdown")
                for item in self._queue:
                    if isinstance(item, _Barrier):
                        item.done.set()
                self._queue.clear()
            if stopping and not self._queue:
                return

    def _drain(self, stopping: bool = False) -> bool:
        """Write what is queued; False when a batch could be neither written nor spilled (it stays queued).

        While both stay unwritable, attempts wait out a doubling back-off instead
        of rebuilding the backlog on every wake-up (barriers are released so no
        reader hangs); shutdown tries once more regardless.
        """
        if self._retry_at and time.monotonic() < self._retry_at and not (stopping or self._retry_now):
            return True
        self._retry_now = False
        if self._con is None:
            try:
                self._connect()
                if not self._retry_at:  # in a back-off, the "writable again" line says when it really is
                    log.warning("request log: reopened %s", self.path)
            except StoreUnavailable:
                pass
            except Exception as exc:  # a failing migration or spill load (disk still full) must not kill the thread
                if self._unavailable_reason != one_line(exc):
                    log.warning("request log: reopening %s failed: %s", self.path, one_line(exc))
                self._unavailable_reason = one_line(exc)
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
            self._in_batch = len(batch)
            try:
                ok = not batch or self._write(batch)
            finally:
                self._in_batch = 0
            if not ok:
                self._requeue(batch)
                for b in barriers:
                    b.done.set()
                self._release_barriers()  # nothing behind this batch can be written either
                self._retry_delay = min(RETRY_MAX_S, max(2 * self._retry_delay, 0.5))
                self._retry_at = time.monotonic() + self._retry_delay
                return False
            if self._retry_at:
                log.warning("request log: writable again (%s)", "spill file" if self._con is None else self.path)
                self._retry_at = self._retry_delay = 0.0
            for b in barriers:
                b.done.set()
        return True

    def _release_barriers(self) -> None:
        """Unblock flush() callers while nothing can be written; the rows themselves stay queued."""
        kept = [item for item in self._queue if not isinstance(item, _Barrier)]
        if len(kept) != len(self._queue):
            for item in self._queue:
                if isinstance(item, _Barrier):
                    item.done.set()
            self._queue.clear()
            self._queue.extend(kept)

    def _requeue(self, batch: list[Any]) -> None:
        """Put an unwritable batch back at the head of the queue (disk full: the spill file failed too).

        The rows wait in memory for the next flush, so space freed while the service
        runs loses nothing; only what does not fit under log_queue_max is dropped
        (the oldest rows, counted).
        """
        room = max(0, self.settings.log_queue_max - len(self._queue))
        keep = batch[len(batch) - room:] if room < len(batch) else batch
        if len(batch) > len(keep):
            self._drop(len(batch) - len(keep), "queue full while the disk was full")
        self._queue.extendleft(reversed(keep))

    def _write(self, batch: list[Any]) -> bool:
        """Insert one batch, else spill it; False when neither worked. Rows refused for their data are dropped."""
        with self._db_lock:
            con = self._con
            if con is not None:
                try:
                    bad = _insert_isolating(con, batch)
                except Exception as exc:
                    if self._spill_error is None:
                        log.warning("request log: writing %d rows failed (%s); spilling", len(batch), one_line(exc))
                else:
                    self._count_bad(bad, "refused by the database")
                    self.written += len(batch) - len(bad)
                    return True
        self._disconnect_after_failure()
        return self._spill(batch)

    def _count_bad(self, bad: list[tuple[Any, str]], what: str) -> None:
        for item, why in bad:
            table = "requests" if isinstance(item, RequestEvent) else item[0]
            log.error("request log: a %s row was %s and dropped: %s", table, what, why)
            self._drop(1, f"{what}: {why}")

    def _disconnect_after_failure(self) -> None:
        """A failed write may leave DuckDB invalidated (disk full): reopen on the next flush."""
        with self._db_lock:
            if self._con is not None:
                try:
                    self._con.close()
                except duckdb.Error:
                    pass
                self._con = None

    def _spill(self, batch: list[Any]) -> bool:
        lines: list[str] = []
        for item in batch:
            table, row = _as_row(item)
            try:
                lines.append(_spill_line(table, row))
            except (ValueError, TypeError) as exc:  # not JSON-able: it could never be loaded back either
                self._count_bad([(item, one_line(exc))], "not storable")
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
                log.error("request log: cannot spill %d rows to %s (%s); they stay queued in memory, "
                          "retried with a back-off of up to %.0f s", len(lines), path, exc, RETRY_MAX_S)
            self._spill_error = str(exc)
            _truncate(path, size)  # a half-written batch would be loaded back twice once it is retried
            return False

    def _load_spill(self, con: duckdb.DuckDBPyConnection) -> None:
        """Insert rows spilled by an earlier run, in one transaction, then remove the file.

        A line that cannot be read or inserted (cut short by a crash, edited by
        hand, a value its column refuses) goes to ``<db>.spill.quarantine.jsonl``
        with the reason, and is counted: it never stops the service from starting.
        """
        path = spill_path(self.path)
        if not path.exists():
            return
        items: list[tuple[str, dict[str, Any]]] = []
        line_of: dict[int, str] = {}  # id of each item -> the spill line it came from
        quarantine: list[tuple[str, str]] = []
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                try:
                    item = json.loads(line)
                    table, row = item["table"], item["row"]
                    if table not in WRITABLE_TABLES or not isinstance(row, dict):
                        raise ValueError(f"not a row of a known table: {str(table)[:40]}")
                except (ValueError, KeyError, TypeError) as exc:
                    if line.strip():
                        quarantine.append((line, one_line(exc)))
                    continue
                items.append((table, row))
                line_of[id(items[-1])] = line
        bad = _insert_isolating(con, items, live=False)
        quarantine += [(line_of[id(item)], why) for item, why in bad]
        if quarantine:
            qpath = Path(f"{self.path}.spill.quarantine.jsonl")
            with open(qpath, "a", encoding="utf-8", errors="surrogateescape") as fh:
                for line, why in quarantine:
                    fh.write(json.dumps({"reason": why, "line": line.rstrip("\n")}) + "\n")
            self.quarantined += len(quarantine)
            log.error("request log: %d spilled lines could not be loaded; moved to %s", len(quarantine), qpath)
        path.unlink()
        n = len(items) - len(bad)
        self.loaded_from_spill += n
        if n:
            log.warning("request log: loaded %d spilled rows from %s", n, path)

    # -- reading ---------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._db_lock:
            if self._con is None:
                raise StoreUnavailable(
                    f"the database {self.path} is not open ({self._unavailable_reason or 'closed'})"
                )
            return self._con.cursor()

    def _query_sync(self, sql: str, params: Any = None, timeout: float | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self._cursor()
        self._user_cursors.add(cur)
        try:
            return execute_read(cur, sql, params, timeout=timeout)
        finally:
            self._user_cursors.discard(cur)
            cur.close()

    async def query(self, sql: str, params: Any = None, timeout: float | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read-only statement on its own cursor, off the event loop; interrupted after `timeout` s."""
        return await asyncio.to_thread(self._query_sync, sql, params, timeout)

    def read_df(self, sql: str, params: Any = None) -> pd.DataFrame:
        """A read-only query as a DataFrame, for worker threads (training, planning)."""
        columns, rows = self._query_sync(sql, params)
        return pd.DataFrame(rows, columns=columns)


def _as_row(item: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(item, RequestEvent):
        return "requests", dict(zip(REQUEST_COLUMNS, _event_tuple(item), strict=False))
    return item[0], item[1]


def _frames(items: list[Any]) -> list[tuple[str, pd.DataFrame]]:
    events = [item for item in items if isinstance(item, RequestEvent)]
    other: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        if not isinstance(item, RequestEvent):
            other.setdefault(item[0], []).append(item[1])
    frames: list[tuple[str, pd.DataFrame]] = []
    if events:
        frames.append(("requests", pd.DataFrame([_event_tuple(e) for e in events], columns=REQUEST_COLUMNS)))
    frames.extend((table, _frame(table, rows)) for table, rows in other.items())
    return frames


def _insert_isolating(con: duckdb.DuckDBPyConnection, items: list[Any], live: bool = True) -> list[tuple[Any, str]]:
    """Insert `items` (RequestEvents or (table, row) pairs); return the ones refused for their data, with why.

    The whole list goes in one transaction; when its data is refused, it is split
    in halves until the rows at fault are alone, so n good rows cost O(log n)
    extra inserts per bad row. Errors of the disk or the connection propagate. For
    `live` batches, every row refused alike is taken for a database fault instead
    (the rows spill and are kept); a spill file being loaded has no such fallback.
    """
    bad = _isolate(con, items)
    if live and len(items) > 1 and len(bad) == len(items):
        # Every row refused alike is no bad row but a bad database (or schema): keep them all by spilling.
        raise duckdb.OperationalError(f"every row of a {len(items)}-row batch was refused: {bad[0][1]}")
    return bad


def _isolate(con: duckdb.DuckDBPyConnection, items: list[Any]) -> list[tuple[Any, str]]:
    if not items:
        return []
    try:
        _insert_atomically(con, _frames(items))
        return []
    except Exception as exc:
        if not _is_data_error(exc):
            raise
        if len(items) == 1:
            return [(items[0], one_line(exc))]
    mid = len(items) // 2
    return _isolate(con, items[:mid]) + _isolate(con, items[mid:])


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
            try:
                con.unregister("_prewarm_batch")
            except duckdb.Error:
                pass  # an aborted transaction refuses this too; the next register replaces the name anyway


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
