"""The SQL behind the review page and `onet-llm review export`.

They read `runs`, `run_rows` (and `calls`, when the LLM stage has written it) and write only
`review_decisions`. Decisions are appended, never updated: the latest one per row counts.
Filtering happens in DuckDB so a run of millions of rows pages as quickly as a small one;
`review.queries` turns these records into what the page shows.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Protocol

import pandas as pd

from onet_llm.store.db import Database, now

_BASE_SQL = """
WITH latest AS (
    SELECT * FROM review_decisions WHERE run_id = $run
    QUALIFY row_number() OVER (PARTITION BY row_number ORDER BY decision_id DESC) = 1
),
review AS (
    SELECT r.row_number, r.posting_id, r.title, r.body, r.shortlist, r.labels, r.source,
           r.error, r.call_key,
           json_extract_string(r.labels, '$[0].onet_code') AS label_code,
           json_extract_string(r.shortlist, '$[0].onet_code') AS embedding_code,
           TRY_CAST(json_extract_string(r.labels, '$[0].confidence') AS DOUBLE) AS confidence,
           d.decision_id, d.action, d.onet_code AS decision_code,
           d.onet_title AS decision_title, d.previous_onet_code, d.previous_onet_title,
           d.reviewer, d.note, d.decided_at
    FROM run_rows r LEFT JOIN latest d USING (row_number)
    WHERE r.run_id = $run
)
"""

VIEW_PREDICATES: dict[str, str] = {
    "all": "TRUE",
    "disagree": "(source = 'llm' AND label_code IS DISTINCT FROM embedding_code)",
    "low_confidence": "(confidence < $low)",
    "problems": "(source IN ('fallback', 'error') OR coalesce(error, '') <> '')",
    "unreviewed": "(decision_id IS NULL)",
    "reviewed": "(decision_id IS NOT NULL)",
}
_ORDER: dict[str, str] = {
    "row": "row_number",
    "confidence_asc": "confidence ASC NULLS LAST, row_number",
    "confidence_desc": "confidence DESC NULLS LAST, row_number",
}

_EXPORT_SQL = """
WITH latest AS (
    SELECT * FROM review_decisions
    QUALIFY row_number() OVER (
        PARTITION BY run_id, row_number ORDER BY decision_id DESC) = 1
)
SELECT r.posting_id AS id, r.title, r.body, d.onet_code, d.onet_title,
       d.previous_onet_code, d.previous_onet_title, d.action AS decision, r.source,
       d.reviewer, d.note, strftime(d.decided_at, '%Y-%m-%dT%H:%M:%SZ') AS decided_at,
       d.run_id, d.row_number
FROM latest d JOIN run_rows r USING (run_id, row_number)
WHERE {conditions}
ORDER BY d.run_id, d.row_number
"""


class RowFilter(Protocol):
    """What the page asks for (`review.queries.ReviewFilter`)."""

    view: str
    onet_code: str
    major_group: str
    text: str
    low_confidence_below: float
    sort: str
    page: int
    page_size: int


def _narrowing(review_filter: RowFilter) -> tuple[str, dict[str, Any]]:
    """The occupation, major group and free-text conditions shared by every view."""
    clauses = ["TRUE"]
    params: dict[str, Any] = {}
    if review_filter.onet_code:
        clauses.append("label_code = $code")
        params["code"] = review_filter.onet_code
    if review_filter.major_group:
        clauses.append("left(label_code, 2) = $major")
        params["major"] = review_filter.major_group
    if review_filter.text:
        escaped = re.sub(r"([\\%_])", r"\\\1", review_filter.text)
        clauses.append(
            "(title ILIKE $text ESCAPE '\\' OR body ILIKE $text ESCAPE '\\' "
            "OR posting_id ILIKE $text ESCAPE '\\' OR CAST(labels AS VARCHAR) ILIKE $text "
            "ESCAPE '\\' OR coalesce(note, '') ILIKE $text ESCAPE '\\')"
        )
        params["text"] = f"%{escaped}%"
    return " AND ".join(clauses), params


class ReviewTables(Database):
    def run_summaries(self) -> pd.DataFrame:
        """Every run, newest first, settings as JSON text."""
        return self.db.execute(
            "SELECT run_id, command, input_path, model_id, status, rows_done, started_at, "
            "finished_at, CAST(settings AS VARCHAR) AS settings FROM runs ORDER BY started_at DESC"
        ).df()

    def count_views(self, run_id: str, review_filter: RowFilter) -> dict[str, int]:
        """How many rows each view holds under the current occupation/group/text narrowing."""
        narrowing, params = _narrowing(review_filter)
        selects = ", ".join(
            f"count(*) FILTER (WHERE {predicate}) AS {view}"
            for view, predicate in VIEW_PREDICATES.items()
        )
        row = self.db.execute(
            _BASE_SQL + f"SELECT {selects} FROM review WHERE {narrowing}",
            {"run": run_id, "low": review_filter.low_confidence_below, **params},
        ).fetchone()
        return dict(zip(VIEW_PREDICATES, (int(value) for value in row), strict=True))

    def page_row_numbers(self, run_id: str, review_filter: RowFilter) -> list[int]:
        """The row numbers of one page, picked on narrow columns: bodies and shortlists of the
        other rows are never touched."""
        narrowing, params = _narrowing(review_filter)
        where = f"{VIEW_PREDICATES[review_filter.view]} AND {narrowing}"
        params = {"run": run_id, **params}
        if review_filter.view == "low_confidence":  # DuckDB rejects unused parameters
            params["low"] = review_filter.low_confidence_below
        return [
            row[0]
            for row in self.db.execute(
                _BASE_SQL + f"SELECT row_number FROM review WHERE {where} "
                f"ORDER BY {_ORDER[review_filter.sort]} LIMIT $limit OFFSET $offset",
                {
                    **params,
                    "limit": review_filter.page_size,
                    "offset": (review_filter.page - 1) * review_filter.page_size,
                },
            ).fetchall()
        ]

    def review_records(self, run_id: str, row_numbers: list[int]) -> dict[int, dict[str, Any]]:
        """Whole rows with their latest decision, by row number."""
        if not row_numbers:
            return {}
        frame = self.db.execute(
            _BASE_SQL + "SELECT * FROM review WHERE row_number IN (SELECT unnest($page))",
            {"run": run_id, "page": row_numbers},
        ).df()
        return {int(record["row_number"]): record for record in frame.to_dict("records")}

    def review_record(self, run_id: str, row_number: int) -> dict[str, Any] | None:
        frame = self.db.execute(
            _BASE_SQL + "SELECT * FROM review WHERE row_number = $row",
            {"run": run_id, "row": row_number},
        ).df()
        return None if frame.empty else frame.to_dict("records")[0]

    def call_records(self, call_keys: list[str], wanted: list[str]) -> list[dict[str, Any]]:
        """The `wanted` columns (those present) of these calls, when the store has a `calls`
        table; request payloads are never read."""
        if not call_keys:
            return []
        present = {
            row[0]
            for row in self.db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'calls'"
            ).fetchall()
        }
        columns = [name for name in wanted if name in present]
        if "call_key" not in present or not columns:
            return []
        frame = self.db.execute(
            f"SELECT call_key, {', '.join(columns)} FROM calls WHERE call_key IN "
            f"(SELECT unnest($keys))",
            {"keys": sorted(set(call_keys))},
        ).df()
        return frame.to_dict("records")

    def top_label_counts(self, run_id: str) -> list[tuple[str, str | None, int]]:
        """(code, title, rows) for every top label in the run, most frequent first."""
        return self.db.execute(
            "SELECT json_extract_string(labels, '$[0].onet_code') AS code, "
            "any_value(json_extract_string(labels, '$[0].onet_title')), count(*) AS n "
            "FROM run_rows WHERE run_id = ? AND code IS NOT NULL "
            "GROUP BY code ORDER BY n DESC, code",
            [run_id],
        ).fetchall()

    def insert_decision(self, decision: dict[str, Any]) -> tuple[int, datetime]:
        """Append one decision (columns of `review_decisions`); its id and time."""
        columns = [
            "run_id",
            "row_number",
            "posting_id",
            "action",
            "onet_code",
            "onet_title",
            "previous_onet_code",
            "previous_onet_title",
            "reviewer",
            "note",
        ]
        decision_id, decided_at = self.db.execute(
            f"INSERT INTO review_decisions ({', '.join(columns)}, decided_at) "
            f"VALUES ({', '.join('?' for _ in columns)}, ?) RETURNING decision_id, decided_at",
            [*(decision[name] for name in columns), now()],
        ).fetchone()
        return int(decision_id), decided_at

    def latest_decisions(self, run_id: str | None, only_overrides: bool) -> pd.DataFrame:
        """The latest decision per reviewed row, joined to its posting."""
        conditions = ["TRUE"]
        params: list[Any] = []
        if run_id:
            conditions.append("d.run_id = ?")
            params.append(run_id)
        if only_overrides:
            conditions.append("d.action = 'override'")
        sql = _EXPORT_SQL.format(conditions=" AND ".join(conditions))
        return self.db.execute(sql, params).df()
