"""The DuckDB file itself: opening it, one transaction helper, and the lock LLM workers share.

DuckDB allows one writing process per file, and a connection is not thread-safe: `Database`
turns a busy file into a one-line `StoreError`, and serialises the statements of the rerank
worker threads with one lock, each on its own cursor.
"""

from __future__ import annotations

import threading
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
    """One open DuckDB file; the table groups (`runs`, `calls`, `reviews`) build on it."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as error:
            raise StoreError(
                f"cannot open store {path}: {str(error).splitlines()[0]} "
                "(another onet-llm process may be using it; pass --store to use another file)"
            ) from None
        if not read_only:
            self.db.execute(f"SET memory_limit = '{STORE_MEMORY_LIMIT}'")
        # LLM workers are threads sharing this store: each statement on a call table runs on
        # its own cursor, serialised by this lock (DuckDB connections are not thread-safe).
        self._lock = threading.Lock()

    @contextmanager
    def cursor(self) -> Iterator[Connection]:
        """A cursor of its own under the lock, for statements made from worker threads."""
        with self._lock:
            cursor = self.db.cursor()
            try:
                yield cursor
            finally:
                cursor.close()

    def transaction(self) -> Iterator[Connection]:
        """`with store.transaction() as db:` on the main connection."""
        return transaction(self.db)

    def close(self) -> None:
        self.db.close()
