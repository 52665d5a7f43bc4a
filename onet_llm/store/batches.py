"""Batches a label run submitted to the Batch API (`batches`) and their requests
(`batch_requests`): what a killed run needs to resume the same batch, and what
`onet-llm batches` lists. A batch's answers go to the call cache (`calls`, `call_log`) in the
same transaction that marks it processed, so a batch is never counted twice.

States of a batch: `prepared` (its lines are here) -> `uploaded` (`file_id`) -> the server's
states from `validating` to one of `completed | failed | expired | cancelled` -> `processed`.
"""

from __future__ import annotations

import json
from typing import Any

from onet_llm.store.calls import write_call
from onet_llm.store.db import Database, now, transaction

BATCH_COLUMNS = (
    "batch_key, run_id, model, endpoint, requests, bytes, file_id, batch_id, status, completed, "
    "failed, output_file_id, error_file_id, answered, cost_usd, created_at, updated_at"
)
# Batches whose requests are paid for or on their way: never asked again while they run.
IN_FLIGHT = "status NOT IN ('prepared', 'processed')"
UPDATABLE = {
    "file_id",
    "batch_id",
    "status",
    "completed",
    "failed",
    "output_file_id",
    "error_file_id",
}


class BatchTables(Database):
    def add_batch(
        self,
        key: str,
        run_id: str | None,
        model: str,
        endpoint: str | None,
        lines: list[tuple[str, str, dict]],
        size: int,
    ) -> None:
        """A prepared batch and its lines `(call_key, line, call)`, before anything is sent."""
        stamp = now()
        with self.cursor() as cursor, transaction(cursor):
            cursor.execute(
                "INSERT INTO batches (batch_key, run_id, model, endpoint, requests, bytes, "
                "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'prepared', ?, ?)",
                [key, run_id, model, endpoint, len(lines), size, stamp, stamp],
            )
            cursor.executemany(
                "INSERT INTO batch_requests (batch_key, call_key, position, line, call, status) "
                "VALUES (?, ?, ?, ?, ?, 'pending')",
                [
                    [key, call_key, position, line, json.dumps(call)]
                    for position, (call_key, line, call) in enumerate(lines)
                ],
            )

    def forget_prepared(self, run_id: str) -> None:
        """Drop this run's batches that were never uploaded: planning makes them again, with
        the same keys (a file uploaded just before a kill is then found on the server)."""
        with self.cursor() as cursor, transaction(cursor):
            where = "SELECT batch_key FROM batches WHERE run_id = ? AND status = 'prepared'"
            cursor.execute(f"DELETE FROM batch_requests WHERE batch_key IN ({where})", [run_id])
            cursor.execute("DELETE FROM batches WHERE run_id = ? AND status = 'prepared'", [run_id])

    def batched_keys(self, run_id: str) -> set[str]:
        """Call keys not to put in a new batch: every request of this run's batches (a failed
        line is retried in sync, never batched again) and of batches in flight anywhere."""
        with self.cursor() as cursor:
            rows = cursor.execute(
                "SELECT DISTINCT r.call_key FROM batch_requests r JOIN batches b USING "
                f"(batch_key) WHERE b.run_id = ? OR b.{IN_FLIGHT}",
                [run_id],
            ).fetchall()
        return {row[0] for row in rows}

    def batches(self, run_id: str | None = None, unprocessed: bool = False) -> list[dict]:
        """Batches, oldest first: all, one run's, or those not yet processed."""
        conditions, params = [], []
        if run_id is not None:
            conditions.append("run_id = ?")
            params.append(run_id)
        if unprocessed:
            conditions.append("status <> 'processed'")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self.cursor() as cursor:
            query = f"SELECT {BATCH_COLUMNS} FROM batches {where} ORDER BY created_at"
            cursor.execute(query, params)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def find_batch(self, wanted: str) -> dict | None:
        """A batch by the server's batch id or our key (or a unique prefix of the key)."""
        for batch in self.batches():
            if wanted in (batch["batch_id"], batch["batch_key"]):
                return batch
        matches = [b for b in self.batches() if b["batch_key"].startswith(wanted)]
        return matches[0] if len(matches) == 1 else None

    def update_batch(self, key: str, **values: Any) -> None:
        """Record what the server said (file id, batch id, status, counts, result files)."""
        unknown = set(values) - UPDATABLE
        if unknown:
            raise ValueError(f"not batch columns: {sorted(unknown)}")
        sets = ", ".join(f"{name} = ?" for name in values)
        with self.cursor() as cursor:
            cursor.execute(
                f"UPDATE batches SET {sets}, updated_at = ? WHERE batch_key = ?",
                [*values.values(), now(), key],
            )

    def batch_lines(self, key: str) -> list[str]:
        """The input file's lines, in order."""
        with self.cursor() as cursor:
            rows = cursor.execute(
                "SELECT line FROM batch_requests WHERE batch_key = ? ORDER BY position", [key]
            ).fetchall()
        return [row[0] for row in rows]

    def batch_calls(self, key: str) -> dict[str, dict]:
        """Call key -> the call identity and parameters stored with the request, in order."""
        with self.cursor() as cursor:
            rows = cursor.execute(
                "SELECT call_key, call FROM batch_requests WHERE batch_key = ? ORDER BY position",
                [key],
            ).fetchall()
        return {row[0]: json.loads(row[1]) for row in rows}

    def store_batch_results(
        self,
        key: str,
        run_id: str | None,
        calls: list[dict],
        outcomes: list[tuple[str, str, str | None]],
        cost_usd: float | None,
    ) -> None:
        """One transaction: the calls that got a reply (answers into the cache, every reply
        into the ledger), each line's outcome `(call_key, status, error)`, and the batch
        marked processed. A run killed before it commits reads the files again."""
        answered = sum(1 for _, status, _ in outcomes if status == "ok")
        with self.cursor() as cursor, transaction(cursor):
            for call in calls:
                write_call(cursor, call, run_id, cached=False)
            cursor.executemany(
                "UPDATE batch_requests SET status = ?, error = ? "
                "WHERE batch_key = ? AND call_key = ?",
                [[status, error, key, call_key] for call_key, status, error in outcomes],
            )
            cursor.execute(
                "UPDATE batches SET status = 'processed', answered = ?, cost_usd = ?, "
                "updated_at = ? WHERE batch_key = ?",
                [answered, cost_usd, now(), key],
            )

    def batch_errors(self, run_id: str) -> dict[str, str]:
        """Why each failed request of this run's batches has no answer (for the fallback)."""
        with self.cursor() as cursor:
            rows = cursor.execute(
                "SELECT r.call_key, r.error FROM batch_requests r JOIN batches b USING "
                "(batch_key) WHERE b.run_id = ? AND r.status = 'error'",
                [run_id],
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    def median_tokens_out(self, model: str) -> float | None:
        """Median completion tokens of this model's answered calls (for the dry run)."""
        with self.cursor() as cursor:
            row = cursor.execute(
                "SELECT median(tokens_out) FROM calls WHERE model = ? AND status = 'ok' "
                "AND tokens_out IS NOT NULL",
                [model],
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])
