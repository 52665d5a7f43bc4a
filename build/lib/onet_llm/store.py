"""The DuckDB store: labelling runs and their rows, LLM calls (the cache) and their log.

Schema changes are numbered migrations in the manner of simonw/llm: each `mNNN_*` function runs
once, in order, and is recorded in `_migrations`, so a store written by an older version still
opens. Never edit a migration that has shipped; add a new one.

A run's rows are committed chunk by chunk together with the run's progress counter, so a killed
run resumes after its last committed chunk. The store never imports the pipeline.
"""

from __future__ import annotations

import json
import threading
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


def m002_llm_calls(db: duckdb.DuckDBPyConnection) -> None:
    """LLM calls, one row per distinct request (the cache), and a log of every request a run
    made, cache hits included (the ledger). Neither ever holds an API key."""
    db.execute(
        """
        CREATE TABLE calls (
            call_key VARCHAR PRIMARY KEY,  -- sha256 of model, prompt hash, schema hash, messages,
                                           -- parameters: the same request is never paid twice
            model VARCHAR NOT NULL,
            prompt_version VARCHAR NOT NULL,
            prompt_hash VARCHAR NOT NULL,
            schema_hash VARCHAR NOT NULL,
            request JSON,                  -- messages and parameters as sent (no secrets)
            response_raw VARCHAR,          -- the last response body's message content
            response_parsed JSON,          -- the validated answer, numbers mapped to codes
            tokens_in BIGINT,              -- summed over every attempt
            tokens_out BIGINT,
            cost_usd DOUBLE,               -- NULL: the model has no price, cost unknown
            latency_s DOUBLE,              -- summed over every attempt, waits included
            status VARCHAR NOT NULL,       -- ok | error; only ok rows are served from the cache
            error VARCHAR,
            attempts INTEGER,              -- HTTP requests made for this call
            validation_retries INTEGER,
            transport_retries INTEGER,
            created_at TIMESTAMP NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE call_log (
            request_id VARCHAR PRIMARY KEY,
            run_id VARCHAR,                -- NULL outside a labelling run
            call_key VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            cached BOOLEAN NOT NULL,       -- served from `calls` without any HTTP request
            status VARCHAR NOT NULL,       -- ok | error
            tokens_in BIGINT,
            tokens_out BIGINT,
            cost_usd DOUBLE,               -- 0 for a cache hit; NULL when unknown
            latency_s DOUBLE,
            attempts INTEGER,
            created_at TIMESTAMP NOT NULL
        )
        """
    )


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
    m002_llm_calls,
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


# DuckDB's buffer pool may otherwise grow towards 80% of RAM while a long run appends rows;
# committed rows are on disk, so a small cap bounds the store's share of a long run's memory
# (20,000 rows: +64 MiB resident with the cap, +188 MiB without; benchmarks/throughput.py).
STORE_MEMORY_LIMIT = "256MB"


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
            self.db.execute(f"SET memory_limit = '{STORE_MEMORY_LIMIT}'")
        # LLM workers are threads sharing this store: each statement on a call table runs on
        # its own cursor, serialised by this lock (DuckDB connections are not thread-safe).
        self._lock = threading.Lock()
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

    # -- LLM calls (the cache) and the per-request log (the ledger) ---------------------------
    def cached_call(self, call_key: str) -> dict | None:
        """A validated earlier answer to the same request, or None. Failed calls are kept for
        the audit trail but never served."""
        with self._lock:
            cursor = self.db.cursor()
            try:
                row = cursor.execute(
                    "SELECT call_key, response_parsed, tokens_in, tokens_out, cost_usd, latency_s "
                    "FROM calls WHERE call_key = ? AND status = 'ok'",
                    [call_key],
                ).fetchone()
            finally:
                cursor.close()
        if row is None:
            return None
        return {
            "call_key": row[0],
            "response_parsed": json.loads(row[1]) if row[1] else None,
            "tokens_in": row[2],
            "tokens_out": row[3],
            "cost_usd": row[4],
            "latency_s": row[5],
        }

    def record_call(self, call: dict, run_id: str | None, cached: bool) -> None:
        """Write a call (unless served from the cache) and its log entry in one transaction."""
        with self._lock:
            cursor = self.db.cursor()
            try:
                cursor.execute("BEGIN TRANSACTION")
                if not cached:
                    cursor.execute(
                        "INSERT OR REPLACE INTO calls VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            call["call_key"],
                            call["model"],
                            call["prompt_version"],
                            call["prompt_hash"],
                            call["schema_hash"],
                            json.dumps(call["request"]),
                            call.get("response_raw"),
                            json.dumps(call["response_parsed"])
                            if call.get("response_parsed") is not None
                            else None,
                            call.get("tokens_in"),
                            call.get("tokens_out"),
                            call.get("cost_usd"),
                            call.get("latency_s"),
                            call["status"],
                            call.get("error"),
                            call.get("attempts"),
                            call.get("validation_retries"),
                            call.get("transport_retries"),
                            _now(),
                        ],
                    )
                cursor.execute(
                    "INSERT INTO call_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        uuid.uuid4().hex,
                        run_id,
                        call["call_key"],
                        call["model"],
                        cached,
                        call["status"],
                        0 if cached else call.get("tokens_in"),
                        0 if cached else call.get("tokens_out"),
                        0.0 if cached else call.get("cost_usd"),
                        0.0 if cached else call.get("latency_s"),
                        0 if cached else call.get("attempts"),
                        _now(),
                    ],
                )
                cursor.execute("COMMIT")
            except Exception:
                cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()

    def calls(self) -> pd.DataFrame:
        with self._lock:
            return self.db.execute("SELECT * FROM calls ORDER BY created_at").df()

    def call_log(self, run_id: str | None = None) -> pd.DataFrame:
        query = "SELECT * FROM call_log"
        params: list = []
        if run_id is not None:
            query += " WHERE run_id = ?"
            params.append(run_id)
        with self._lock:
            return self.db.execute(query + " ORDER BY created_at", params).df()

    def ledger(self, run_id: str | None = None) -> pd.DataFrame:
        """Requests, calls made, cache hits, failures, tokens, cost and latency by run and
        model. `cost_usd` is NULL when any paid call in the group had no known price."""
        where = "WHERE run_id = ?" if run_id is not None else ""
        params = [run_id] if run_id is not None else []
        with self._lock:
            return self.db.execute(
                f"""
                SELECT coalesce(run_id, '-') AS run_id,
                       model,
                       count(*) AS requests,
                       count(*) FILTER (WHERE NOT cached) AS calls,
                       count(*) FILTER (WHERE cached) AS cache_hits,
                       count(*) FILTER (WHERE status <> 'ok') AS failed,
                       coalesce(sum(attempts), 0) AS http_requests,
                       coalesce(sum(tokens_in), 0) AS tokens_in,
                       coalesce(sum(tokens_out), 0) AS tokens_out,
                       CASE WHEN count(*) FILTER (WHERE NOT cached AND cost_usd IS NULL) > 0
                            THEN NULL ELSE coalesce(sum(cost_usd), 0) END AS cost_usd,
                       median(latency_s) FILTER (WHERE NOT cached) AS median_latency_s,
                       min(created_at) AS first_request
                FROM call_log {where}
                GROUP BY ALL
                ORDER BY first_request
                """,
                params,
            ).df()
