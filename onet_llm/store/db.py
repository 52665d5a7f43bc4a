"""The DuckDB file itself: opening it, one transaction helper, and the lock LLM workers share.

DuckDB lets one process at a time open a file for writing (and then no other process may read
it), and a connection is not thread-safe. So that `ledger`, `runs` and the review page work
while a long `label` run writes, the run opens its store `shared`: it holds the file only
while it writes (a chunk's rows, one LLM call) and lets go in between, and every opener waits
up to `STORE_LOCK_WAIT_S` for a busy file before giving up with a one-line `StoreError`. The
statements of the rerank worker threads are serialised with one lock, each on its own cursor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from onet_llm.errors import StoreError

# DuckDB's buffer pool may otherwise grow towards 80% of RAM while a long run appends rows;
# committed rows are on disk, so a small cap bounds the store's share of a long run's memory
# (20,000 rows: +64 MiB resident with the cap, +188 MiB without; benchmarks/throughput.py).
STORE_MEMORY_LIMIT = "256MB"
# How long opening a store waits for another process to let go of it (a shared writer holds
# it for one chunk's commit: well under a second; a reader for one query).
STORE_LOCK_WAIT_S = 20.0

Connection = duckdb.DuckDBPyConnection


def now() -> datetime:
    """UTC without a time zone: the form every TIMESTAMP column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


@contextmanager
def transaction(connection: Connection) -> Iterator[Connection]:
    """BEGIN ... COMMIT, or ROLLBACK when the block raises: the only place either is written."""
    connection.execute("BEGIN TRANSACTION")
    try:
        yield connection
        connection.execute("COMMIT")
    except Exception:
        connection.execute("ROLLBACK")
        raise


class Database:
    """One DuckDB file; the table groups (`runs`, `calls`, `reviews`) build on it.

    `shared`: the connection is closed by `release()` and after every worker-thread
    statement, and reopened on the next use, so other processes can open the file between."""

    def __init__(self, path: Path, read_only: bool = False, shared: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self.shared = shared
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        # LLM workers are threads sharing this store: each statement on a call table runs on
        # its own cursor, serialised by this lock (DuckDB connections are not thread-safe).
        self._lock = threading.RLock()
        self._connection: Connection | None = None
        self._connection = self._open()

    def _open(self) -> Connection:
        deadline = time.monotonic() + STORE_LOCK_WAIT_S
        pause = 0.02
        while True:
            try:
                connection = duckdb.connect(str(self.path), read_only=self.read_only)
                break
            except duckdb.IOException as error:
                message = str(error).splitlines()[0]
                if "lock" not in message.lower() or time.monotonic() > deadline:
                    raise StoreError(
                        f"cannot open store {self.path}: {message} (another onet-llm process "
                        "is using it; pass --store to use another file)"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.25)
        if not self.read_only:
            connection.execute(f"SET memory_limit = '{STORE_MEMORY_LIMIT}'")
        return connection

    @property
    def db(self) -> Connection:
        """The open connection (reopened after a `release()` of a shared store)."""
        with self._lock:
            if self._connection is None:
                self._connection = self._open()
            return self._connection

    def release(self) -> None:
        """Let other processes open the file until the next statement (shared stores)."""
        if not self.shared:
            return
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    @contextmanager
    def cursor(self) -> Iterator[Connection]:
        """A cursor of its own under the lock, for statements made from worker threads."""
        with self._lock:
            cursor = self.db.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
                self.release()

    def transaction(self) -> Iterator[Connection]:
        """`with store.transaction() as db:` on the main connection."""
        return transaction(self.db)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
