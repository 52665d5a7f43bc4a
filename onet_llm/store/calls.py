"""LLM calls: the cache (`calls`, one row per distinct request) and the ledger (`call_log`, one
row per request a run made, cache hits included). Neither ever holds an API key.

Every method runs on its own cursor under the store's lock: the rerank workers are threads.
`CallTables` is the store side of `rerank.cache.CallCache`.
"""

from __future__ import annotations

import json
import uuid

import pandas as pd

from onet_llm.store.db import Database, now, transaction

LEDGER_SQL = """
SELECT coalesce(run_id, '-') AS run_id,
       model,
       count(*) AS requests,
       count(*) FILTER (WHERE NOT cached) AS calls,
       count(*) FILTER (WHERE cached) AS cache_hits,
       count(*) FILTER (WHERE status <> 'ok') AS failed,
       CAST(coalesce(sum(attempts), 0) AS BIGINT) AS http_requests,
       CAST(coalesce(sum(tokens_in), 0) AS BIGINT) AS tokens_in,
       CAST(coalesce(sum(tokens_out), 0) AS BIGINT) AS tokens_out,
       CAST(coalesce(sum(cached_tokens), 0) AS BIGINT) AS cached_tokens,
       count(*) FILTER (WHERE mode = 'batch' AND NOT cached) AS batch_calls,
       CASE WHEN count(*) FILTER (WHERE NOT cached AND cost_usd IS NULL) > 0
            THEN NULL ELSE coalesce(sum(cost_usd), 0) END AS cost_usd,
       median(latency_s) FILTER (WHERE NOT cached) AS median_latency_s,
       min(created_at) AS first_request
FROM call_log {where}
GROUP BY ALL
ORDER BY first_request
"""


CALL_COLUMNS = (
    "call_key, model, prompt_version, prompt_hash, schema_hash, request, response_raw, "
    "response_parsed, tokens_in, tokens_out, cost_usd, latency_s, status, error, attempts, "
    "validation_retries, transport_retries, created_at, cached_tokens, mode"
)
LOG_COLUMNS = (
    "request_id, run_id, call_key, model, cached, status, tokens_in, tokens_out, cost_usd, "
    "latency_s, attempts, created_at, cached_tokens, mode"
)


def _placeholders(columns: str) -> str:
    return ", ".join("?" for _ in columns.split(","))


def _call_values(call: dict) -> list:
    parsed = call.get("response_parsed")
    return [
        call["call_key"],
        call["model"],
        call["prompt_version"],
        call["prompt_hash"],
        call["schema_hash"],
        json.dumps(call["request"]),
        call.get("response_raw"),
        json.dumps(parsed) if parsed is not None else None,
        call.get("tokens_in"),
        call.get("tokens_out"),
        call.get("cost_usd"),
        call.get("latency_s"),
        call["status"],
        call.get("error"),
        call.get("attempts"),
        call.get("validation_retries"),
        call.get("transport_retries"),
        now(),
        call.get("cached_tokens") or 0,
        call.get("mode") or "sync",
    ]


def _log_values(call: dict, run_id: str | None, cached: bool) -> list:
    return [
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
        now(),
        0 if cached else call.get("cached_tokens") or 0,
        call.get("mode") or "sync",
    ]


def write_call(cursor, call: dict, run_id: str | None, cached: bool) -> None:
    """The statements of `record_call`, inside the caller's transaction (a batch stores all of
    its answers in one)."""
    if not cached:
        cursor.execute(
            f"INSERT OR REPLACE INTO calls ({CALL_COLUMNS}) VALUES ({_placeholders(CALL_COLUMNS)})",
            _call_values(call),
        )
    cursor.execute(
        f"INSERT INTO call_log ({LOG_COLUMNS}) VALUES ({_placeholders(LOG_COLUMNS)})",
        _log_values(call, run_id, cached),
    )


class CallTables(Database):
    def cached_call(self, call_key: str) -> dict | None:
        """An earlier call to serve in place of asking again, or None: a validated answer
        (status 'ok') or a reply that failed validation ('invalid', which the row falls back
        from again). Calls that got no usable reply ('error') are kept for the audit trail but
        never served: the next run asks again."""
        with self.cursor() as cursor:
            row = cursor.execute(
                "SELECT call_key, response_parsed, tokens_in, tokens_out, cost_usd, latency_s, "
                "status, error FROM calls WHERE call_key = ? AND status IN ('ok', 'invalid')",
                [call_key],
            ).fetchone()
        if row is None:
            return None
        return {
            "call_key": row[0],
            "response_parsed": json.loads(row[1]) if row[1] else None,
            "tokens_in": row[2],
            "tokens_out": row[3],
            "cost_usd": row[4],
            "latency_s": row[5],
            "status": row[6],
            "error": row[7],
        }

    def record_call(self, call: dict, run_id: str | None, cached: bool) -> None:
        """Write a call (unless served from the cache) and its log entry in one transaction."""
        with self.cursor() as cursor, transaction(cursor):
            write_call(cursor, call, run_id, cached)

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
            return self.db.execute(LEDGER_SQL.format(where=where), params).df()

    def call_history(self, run_id: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Each request a run made, newest first, with what was sent and what came back (for
        `onet-llm logs`). The stored request holds messages and parameters, never a key."""
        query = """
            SELECT l.created_at, coalesce(l.run_id, '-') AS run_id, l.model, l.cached,
                   l.status, l.tokens_in, l.tokens_out, l.cost_usd, l.latency_s, l.attempts,
                   c.error, c.prompt_version, c.request, c.response_raw, l.call_key
            FROM call_log l LEFT JOIN calls c USING (call_key)
        """
        params: list = []
        if run_id is not None:
            query += " WHERE l.run_id = ?"
            params.append(run_id)
        query += " ORDER BY l.created_at DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        with self._lock:
            return self.db.execute(query, params).df()
