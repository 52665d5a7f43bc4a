"""The DuckDB store: labelling runs and their rows, LLM calls (the cache) and their log,
review decisions, queues and samples, evaluation results, and Batch API batches. It owns every
SQL statement of the package, and never imports a stage above it: `db` (the file and
`transaction()`), `migrations`, then one module per group of tables.
"""

from __future__ import annotations

from pathlib import Path

from onet_llm.store.audit import AuditTables
from onet_llm.store.batches import BatchTables
from onet_llm.store.calls import CallTables
from onet_llm.store.evals import EvalTables
from onet_llm.store.migrations import apply_migrations
from onet_llm.store.runs import RUN_ROW_COLUMNS, RunRecord, RunTables

__all__ = ["RUN_ROW_COLUMNS", "RunRecord", "Store"]


class Store(RunTables, CallTables, AuditTables, EvalTables, BatchTables):
    """One DuckDB file. DuckDB allows one process at a time to write a file: an opener waits
    briefly for a busy file, then gets a clear StoreError rather than a lock traceback. A
    `shared` store (a label run) holds the file only while it writes (see `store.db`)."""

    def __init__(self, path: Path, read_only: bool = False, shared: bool = False) -> None:
        super().__init__(path, read_only, shared)
        if not read_only:
            apply_migrations(self.db)
            self.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
