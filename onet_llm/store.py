"""The DuckDB store: labelling runs and their rows (and, in later migrations, LLM calls).

Schema changes are numbered migrations in the manner of simonw/llm: each `mNNN_*` function runs
once, in order, and is recorded in `_migrations`, so a store written by an older version still
opens. Never edit a migration that has shipped; add a new one.

A run's rows are committed chunk by chunk together with the run's progress counter, so a killed
run resumes after its last committed chunk. The store never imports the pipeline.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from onet_llm.errors import StoreError


def m001_runs(db: duckdb.DuckDBPyConnection) -> None:
    db.execute(
        """
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            run_key VARCHAR NOT NULL,
            command VARCHAR NOT NULL,
            input_path VARCHAR,
            output_path VARCHAR,
            settings JSON,
            model_id VARCHAR,
            index_key VARCHAR,
            status VARCHAR NOT NULL,      -- running | done | failed
            rows_done BIGINT NOT NULL DEFAULT 0,
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP
        )
        """
    )
    db.execute(
        """
        CREATE TABLE run_rows (
            run_id VARCHAR NOT NULL,
            row_number BIGINT NOT NULL,   -- 1-based position in the input
            posting_id VARCHAR,
            title VARCHAR,
            body VARCHAR,
            shortlist JSON,               -- [{onet_code, onet_title, score}] best first
            labels JSON,                  -- [{onet_code, onet_title, score, ...}] best first
            source VARCHAR,               -- embedding | llm | fallback | error
            error VARCHAR,
            call_key VARCHAR,             -- the LLM call that chose the labels, if any
            PRIMARY KEY (run_id, row_number)
        )
        """
    )


# m002_llm_calls (issue 6) is a reserved name.


def m003_review_decisions(db: duckdb.DuckDBPyConnection) -> None:
    """An auditor's accept or override of one row's top label. Rows are never updated: a later
    decision on the same row supersedes the earlier one, so the history stays auditable."""
    db.execute("CREATE SEQUENCE review_decision_ids START 1")
    db.execute(
        """
        CREATE TABLE review_decisions (
            decision_id BIGINT PRIMARY KEY DEFAULT nextval('review_decision_ids'),
            run_id VARCHAR NOT NULL,
            row_number BIGINT NOT NULL,
            posting_id VARCHAR,
            action VARCHAR NOT NULL,          -- accept | override
            onet_code VARCHAR NOT NULL,       -- the label the reviewer settled on
            onet_title VARCHAR NOT NULL,
            previous_onet_code VARCHAR,       -- the label it replaces (NULL: the row had none)
            previous_onet_title VARCHAR,
            reviewer VARCHAR NOT NULL,
            note VARCHAR,
            decided_at TIMESTAMP NOT NULL
        )
        """
    )


MIGRATIONS: list[Callable[[duckdb.DuckDBPyConnection], None]] = [
    m001_runs,
    m003_review_decisions,
]


def apply_migrations(db: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply the migrations not yet recorded; returns the names applied now."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)"
    )
    done = {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()}
    applied = []
    for migration in MIGRATIONS:
        if migration.__name__ in done:
            continue
        db.execute("BEGIN TRANSACTION")
        try:
            migration(db)
            db.execute("INSERT INTO _migrations VALUES (?, ?)", [migration.__name__, _now()])
            db.execute("COMMIT")
        except Exception:
            db.execute("ROLLBACK")
            raise
        applied.append(migration.__name__)
    return applied


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    run_key: str
    status: str
    rows_done: int
    output_path: str | None


RUN_ROW_COLUMNS = [
    "run_id",
    "row_number",
    "posting_id",
    "title",
    "body",
    "shortlist",
    "labels",
    "source",
    "error",
    "call_key",
]


class Store:
    """One DuckDB file. DuckDB allows one writing process per file: a second one gets a clear
    StoreError rather than a lock traceback."""

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
            apply_migrations(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------------
    def find_unfinished_run(self, run_key: str) -> RunRecord | None:
        row = self.db.execute(
            "SELECT run_id, run_key, status, rows_done, output_path FROM runs "
            "WHERE run_key = ? AND status = 'running' ORDER BY started_at DESC LIMIT 1",
            [run_key],
        ).fetchone()
        return RunRecord(*row) if row else None

    def start_run(
        self,
        run_key: str,
        command: str,
        input_path: str | None,
        output_path: str | None,
        settings: dict,
        model_id: str,
        index_key: str,
    ) -> RunRecord:
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', 0, ?, NULL)",
            [
                run_id,
                run_key,
                command,
                input_path,
                output_path,
                json.dumps(settings),
                model_id,
                index_key,
                _now(),
            ],
        )
        return RunRecord(run_id, run_key, "running", 0, output_path)

    def append_rows(self, run_id: str, rows: pd.DataFrame) -> int:
        """Commit one chunk's rows and advance the run's counter in one transaction."""
        frame = rows.reindex(columns=RUN_ROW_COLUMNS)
        frame["run_id"] = run_id
        self.db.execute("BEGIN TRANSACTION")
        try:
            self.db.register("chunk_rows", frame)
            self.db.execute("INSERT INTO run_rows SELECT * FROM chunk_rows")
            self.db.unregister("chunk_rows")
            self.db.execute(
                "UPDATE runs SET rows_done = rows_done + ? WHERE run_id = ?", [len(frame), run_id]
            )
            self.db.execute("COMMIT")
        except Exception:
            self.db.execute("ROLLBACK")
            raise
        return len(frame)

    def finish_run(self, run_id: str, status: str = "done") -> None:
        self.db.execute(
            "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status, _now(), run_id]
        )

    def iter_run_rows(self, run_id: str, batch_size: int = 5000) -> Iterator[pd.DataFrame]:
        """A run's rows in input order, a batch at a time (the output is rebuilt from these)."""
        result = self.db.execute(
            "SELECT * FROM run_rows WHERE run_id = ? ORDER BY row_number", [run_id]
        )
        while True:
            batch = result.fetch_df_chunk(max(1, batch_size // 2048))
            if batch.empty:
                return
            yield batch

    def runs(self) -> pd.DataFrame:
        return self.db.execute("SELECT * FROM runs ORDER BY started_at").df()
