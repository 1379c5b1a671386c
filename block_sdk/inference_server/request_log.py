"""Request logging of the adhoc inference server: PostgreSQL, in batches, off the request path.

The request path calls `RequestLogWriter.add(row)`: a non-blocking put on a bounded queue (a
full buffer drops the row and counts it; logging never slows or fails inference). A writer
thread takes rows and writes them with one `COPY` per batch, every `flush_ms` or as soon as
`batch_rows` are waiting. A database that is down is retried with back-off; the rows wait in
the bounded buffer meanwhile.

Table (created by the control plane's migration, model `apps.inference.RequestLog`, or by
`--create-log-table` for standalone use):

    inference_request_log(request_id uuid primary key, session_id varchar(255),
                          block_id varchar(255), seq_no bigint, ts timestamptz,
                          data text, query_parameters text, output_ptr text)
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("block_sdk.inference_server.request_log")

COLUMNS = (
    "request_id",
    "session_id",
    "block_id",
    "seq_no",
    "ts",
    "data",
    "query_parameters",
    "output_ptr",
)
DEFAULT_TABLE = "inference_request_log"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_LIMIT = 1000


def ddl(table: str = DEFAULT_TABLE) -> str:
    """The table and its indexes (matches the control plane's migration)."""
    _check_ident(table)
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    request_id uuid PRIMARY KEY,
    session_id varchar(255) NOT NULL DEFAULT '',
    block_id varchar(255) NOT NULL DEFAULT '',
    seq_no bigint NOT NULL DEFAULT 0,
    ts timestamptz NOT NULL,
    data text NOT NULL DEFAULT '',
    query_parameters text NOT NULL DEFAULT '',
    output_ptr text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS {table}_session_ts ON {table} (session_id, ts);
CREATE INDEX IF NOT EXISTS {table}_block_ts ON {table} (block_id, ts);
CREATE INDEX IF NOT EXISTS {table}_ts ON {table} (ts);
"""


def _check_ident(name: str) -> None:
    if not _IDENT.match(name):
        raise ValueError(f"invalid table name {name!r}")


def make_row(
    *,
    request_id: uuid.UUID,
    session_id: str,
    block_id: str,
    seq_no: int,
    ts: float,
    data: str,
    query_parameters: str,
    output_ptr: str,
) -> tuple[Any, ...]:
    when = datetime.fromtimestamp(ts, UTC) if ts and ts > 1e9 else datetime.now(UTC)
    # PostgreSQL text cannot hold NUL characters; a request carrying one is still logged.
    return (
        request_id,
        session_id.replace("\x00", ""),
        block_id.replace("\x00", ""),
        int(seq_no),
        when,
        data.replace("\x00", ""),
        query_parameters.replace("\x00", ""),
        output_ptr.replace("\x00", ""),
    )


class RequestLogWriter:
    def __init__(
        self,
        dsn: str,
        *,
        table: str = DEFAULT_TABLE,
        flush_ms: int = 200,
        batch_rows: int = 500,
        buffer_max: int = 10_000,
    ) -> None:
        _check_ident(table)
        self.dsn = dsn
        self.table = table
        self.flush_s = max(0.001, flush_ms / 1000)
        self.batch_rows = max(1, batch_rows)
        self.buffer: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=buffer_max)
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._read_conn: Any = None
        self._read_lock = threading.Lock()

    # -- request path ------------------------------------------------------------------
    def add(self, row: tuple[Any, ...]) -> bool:
        try:
            self.buffer.put_nowait(row)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    # -- writer thread -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what is buffered (bounded by `timeout`) and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for conn in (self._conn, self._read_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)

    def _take_batch(self) -> list[tuple[Any, ...]]:
        batch: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + self.flush_s
        while len(batch) < self.batch_rows:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self.buffer.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        from psycopg import sql

        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(self.table), sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        )
        with self._conn.cursor() as cur, cur.copy(stmt) as copy:
            for row in batch:
                copy.write_row(row)

    def _run(self) -> None:
        pending: list[tuple[Any, ...]] = []
        backoff = 0.1
        while True:
            if not pending:
                if self._stop.is_set() and self.buffer.empty():
                    return
                pending = self._take_batch()
                if not pending:
                    continue
            try:
                self._write(pending)
                self.written += len(pending)
                pending = []
                backoff = 0.1
            except Exception as exc:  # keep the rows and retry with back-off
                self.failures += 1
                self.last_error = str(exc)[:300]
                log.warning(
                    "request log write failed",
                    extra={"error": self.last_error, "rows": len(pending)},
                )
                with contextlib.suppress(Exception):
                    if self._conn is not None:
                        self._conn.close()
                self._conn = None
                if "duplicate key" in self.last_error:
                    pending = []  # a replayed batch: its rows are already stored
                if self._stop.is_set():
                    log.error(
                        "request log rows lost at shutdown",
                        extra={"rows": len(pending) + self.buffer.qsize()},
                    )
                    return
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    # -- reads (HTTP handlers, in a worker thread) -------------------------------------
    def query(self, where: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        from psycopg import sql
        from psycopg.rows import dict_row

        limit = max(1, min(int(limit), MAX_LIMIT))
        clauses = [sql.SQL("{} = %s").format(sql.Identifier(k)) for k in where]
        stmt = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY ts DESC, seq_no DESC LIMIT %s").format(
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
            sql.Identifier(self.table),
            sql.SQL(" AND ").join(clauses),
        )
        with self._read_lock:
            for attempt in (1, 2):
                try:
                    if self._read_conn is None or self._read_conn.closed:
                        self._read_conn = self._connect()
                    with self._read_conn.cursor(row_factory=dict_row) as cur:
                        cur.execute(stmt, [*where.values(), limit])
                        rows = cur.fetchall()
                    break
                except Exception:
                    with contextlib.suppress(Exception):
                        if self._read_conn is not None:
                            self._read_conn.close()
                    self._read_conn = None
                    if attempt == 2:
                        raise
        return [
            {**row, "request_id": str(row["request_id"]), "ts": row["ts"].isoformat()}
            for row in rows
        ]

    def stats(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "written": self.written,
            "dropped": self.dropped,
            "buffered": self.buffer.qsize(),
            "buffer_max": self.buffer.maxsize,
            "failures": self.failures,
            "last_error": self.last_error,
        }


def create_table(dsn: str, table: str = DEFAULT_TABLE) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(ddl(table))
