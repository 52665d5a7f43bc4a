"""The SQL behind the review page and `onet-llm review export`.

They read `runs`, `run_rows` (and `calls`, when the LLM stage has written it) and write only
`review_decisions` (and `review_facts`, derived). Decisions are appended, never updated: per
reviewer the newest one in force counts, an undo is a decision too.
Filtering happens in DuckDB so a run of millions of rows pages as quickly as a small one;
`review.queries` turns these records into what the page shows.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Protocol

import pandas as pd

from onet_llm.store.db import Database, now


def _effective_sql(where: str) -> str:
    """The decisions in force among those matching `where`."""
    """The decisions in force among those matching `where`: an `undo` and the decision it
    retracts both drop out. Per reviewer the newest state (accept | override | unsure | flag)
    counts; comments only add a note."""
    return f"""
effective AS (
    SELECT * FROM review_decisions
    WHERE {where} AND action <> 'undo' AND decision_id NOT IN (
        SELECT undoes FROM review_decisions
        WHERE {where} AND action = 'undo' AND undoes IS NOT NULL)
)"""


EFFECTIVE_SQL = (
    _effective_sql("run_id = $run")
    + """,
per_reviewer AS (
    SELECT * FROM effective WHERE action IN ('accept', 'override', 'unsure', 'flag')
    QUALIFY row_number() OVER (PARTITION BY row_number, reviewer ORDER BY decision_id DESC) = 1
)
"""
)
# A row is in disagreement while its reviewers' (role 'review') labels differ and no
# adjudication is newer than the newest of them.
_BASE_SQL = (
    "WITH "
    + EFFECTIVE_SQL
    + """,
latest AS (
    SELECT * FROM per_reviewer WHERE $me = '' OR reviewer = $me
    QUALIFY row_number() OVER (PARTITION BY row_number ORDER BY decision_id DESC) = 1
),
reviewers AS (
    SELECT row_number,
           count(*) FILTER (WHERE action IN ('accept', 'override') AND role = 'review')
               AS labellers,
           count(DISTINCT onet_code) FILTER (
               WHERE action IN ('accept', 'override') AND role = 'review') AS codes,
           max(decision_id) FILTER (WHERE role = 'review') AS last_review,
           max(decision_id) FILTER (WHERE role = 'adjudication') AS last_adjudication
    FROM per_reviewer GROUP BY row_number
),
queue AS (
    SELECT row_number, position FROM review_queues
    WHERE run_id = $run AND reviewer = $queue AND assignment_id = (
        SELECT max(assignment_id) FROM review_queues WHERE run_id = $run)
),
sample AS (
    SELECT row_number FROM review_samples WHERE run_id = $run AND sample_id = (
        SELECT max(sample_id) FROM review_samples WHERE run_id = $run)
),
review AS (
    SELECT r.row_number, r.posting_id, r.title, r.body, r.shortlist, r.labels, r.source,
           r.error, r.call_key, f.label_code, f.embedding_code, f.confidence, f.margin,
           d.decision_id, d.action, d.onet_code AS decision_code,
           d.onet_title AS decision_title, d.previous_onet_code, d.previous_onet_title,
           d.reviewer, d.note, d.decided_at, d.role,
           coalesce(g.labellers, 0) AS labellers,
           coalesce(g.codes > 1 AND (g.last_adjudication IS NULL
                    OR g.last_adjudication < g.last_review), FALSE) AS reviewers_differ,
           q.position AS queue_position, s.row_number IS NOT NULL AS in_sample
    FROM run_rows r
    JOIN review_facts f ON f.run_id = r.run_id AND f.row_number = r.row_number
    LEFT JOIN latest d ON d.row_number = r.row_number
    LEFT JOIN reviewers g ON g.row_number = r.row_number
    LEFT JOIN queue q ON q.row_number = r.row_number
    LEFT JOIN sample s ON s.row_number = r.row_number
    WHERE r.run_id = $run
)
"""
)

# "Low confidence" is more than the LLM's own number: a tiny model says 0.80 to everything.
# A row is doubtful when the LLM's stated confidence is below $low, or the embedding's top-1
# beats its runner-up by less than $margin (cosine), or the LLM picked another occupation than
# the embedding's top-1.
LOW_CONFIDENCE = (
    "(confidence < $low OR margin < $margin "
    "OR (source = 'llm' AND label_code IS DISTINCT FROM embedding_code))"
)
VIEW_PREDICATES: dict[str, str] = {
    "all": "TRUE",
    "disagree": "(source = 'llm' AND label_code IS DISTINCT FROM embedding_code)",
    "low_confidence": LOW_CONFIDENCE,
    "problems": "(source IN ('fallback', 'error') OR coalesce(error, '') <> '')",
    "unreviewed": "(decision_id IS NULL)",
    "reviewed": "(decision_id IS NOT NULL)",
    "flagged": "(action IN ('unsure', 'flag'))",
    "reviewers_differ": "reviewers_differ",
}
# Rows a bulk accept takes: no decision of the reviewer's yet, and a label to accept.
BULK_OPEN = "(decision_id IS NULL AND coalesce(label_code, '') <> '')"
_ORDER: dict[str, str] = {
    "row": "row_number",
    "queue": "queue_position NULLS LAST, row_number",
    "confidence_asc": "confidence ASC NULLS LAST, row_number",
    "confidence_desc": "confidence DESC NULLS LAST, row_number",
    "margin_asc": "margin ASC NULLS LAST, row_number",
}

# The narrow per-row facts every filter reads, extracted from the JSON columns once per run
# (and again when the run has grown): a filter over 100,000 rows then scans numbers, not JSON.
_FACTS_SQL = """
INSERT INTO review_facts
    (run_id, row_number, label_code, label_title, embedding_code, confidence, margin)
SELECT run_id, row_number,
       json_extract_string(labels, '$[0].onet_code'),
       json_extract_string(labels, '$[0].onet_title'),
       json_extract_string(shortlist, '$[0].onet_code'),
       TRY_CAST(json_extract_string(labels, '$[0].confidence') AS DOUBLE),
       TRY_CAST(json_extract_string(shortlist, '$[0].score') AS DOUBLE)
           - TRY_CAST(json_extract_string(shortlist, '$[1].score') AS DOUBLE)
FROM run_rows WHERE run_id = $run
"""

# The gold label per row: reviewers' labels in force when they agree, else an adjudication
# newer than every review; rows whose reviewers disagree with nobody adjudicating are left out.
_GOLD_SQL = (
    "WITH "
    + _effective_sql("TRUE")
    + """,
labels AS (
    SELECT * FROM effective WHERE action IN ('accept', 'override', 'unsure', 'flag')
    QUALIFY row_number() OVER (
        PARTITION BY run_id, row_number, reviewer ORDER BY decision_id DESC) = 1
),
status AS (
    SELECT run_id, row_number,
           count(DISTINCT onet_code) FILTER (
               WHERE role = 'review' AND action IN ('accept', 'override')) AS codes,
           max(decision_id) FILTER (WHERE role = 'review') AS last_review,
           max(decision_id) FILTER (WHERE role = 'adjudication') AS last_adjudication
    FROM labels GROUP BY ALL
),
gold AS (
    SELECT l.*, s.codes <= 1 OR coalesce(s.last_adjudication > s.last_review, FALSE)
               OR (s.last_adjudication IS NOT NULL AND s.last_review IS NULL) AS settled
    FROM labels l JOIN status s USING (run_id, row_number)
    WHERE l.action IN ('accept', 'override')
    QUALIFY row_number() OVER (PARTITION BY run_id, row_number ORDER BY decision_id DESC) = 1
)
"""
)
_EXPORT_SQL = (
    _GOLD_SQL
    + """
SELECT r.posting_id AS id, r.title, r.body, d.onet_code, d.onet_title,
       d.previous_onet_code, d.previous_onet_title, d.action AS decision, r.source,
       d.reviewer, d.note, strftime(d.decided_at, '%Y-%m-%dT%H:%M:%SZ') AS decided_at,
       d.run_id, d.row_number
FROM gold d JOIN run_rows r USING (run_id, row_number)
WHERE d.settled AND {conditions}
ORDER BY d.run_id, d.row_number
"""
)
_UNSETTLED_SQL = _GOLD_SQL + "SELECT count(*) FROM gold d WHERE NOT d.settled AND {conditions}"


JSON_COLUMNS = ("request", "response_parsed")


class RowFilter(Protocol):
    """What the page asks for (`review.queries.ReviewFilter`)."""

    view: str
    onet_code: str
    major_group: str
    text: str
    low_confidence_below: float
    margin_below: float
    reviewer: str
    only_queue: bool
    only_sample: bool
    sort: str
    page: int
    page_size: int


# Free text is matched once per request, on `run_rows` alone, and the matching row numbers
# narrow the counts and the page: the long bodies are scanned once, not once per query.
_TEXT_SQL = """
SELECT r.row_number FROM run_rows r
WHERE r.run_id = $run AND (
    r.title ILIKE $text ESCAPE '\\' OR r.body ILIKE $text ESCAPE '\\'
    OR r.posting_id ILIKE $text ESCAPE '\\' OR CAST(r.labels AS VARCHAR) ILIKE $text ESCAPE '\\'
    OR r.row_number IN (SELECT row_number FROM review_decisions
                        WHERE run_id = $run AND coalesce(note, '') ILIKE $text ESCAPE '\\'))
"""


def _narrowing(review_filter: RowFilter) -> tuple[str, dict[str, Any]]:
    """The occupation, major group, free-text, queue and sample conditions shared by every
    view."""
    clauses = ["TRUE"]
    params: dict[str, Any] = {}
    if review_filter.onet_code:
        clauses.append("label_code = $code")
        params["code"] = review_filter.onet_code
    if review_filter.major_group:
        clauses.append("left(label_code, 2) = $major")
        params["major"] = review_filter.major_group
    if review_filter.text:
        clauses.append("row_number IN (SELECT unnest($matches))")
    if review_filter.only_queue:
        clauses.append("queue_position IS NOT NULL")
    if review_filter.only_sample:
        clauses.append("in_sample")
    return " AND ".join(clauses), params


def _base_params(run_id: str, review_filter: RowFilter) -> dict[str, Any]:
    return {"run": run_id, "me": review_filter.reviewer, "queue": review_filter.reviewer}


def _threshold_params(review_filter: RowFilter) -> dict[str, Any]:
    return {"low": review_filter.low_confidence_below, "margin": review_filter.margin_below}


class ReviewTables(Database):
    def run_summaries(self) -> pd.DataFrame:
        """Every run, newest first, settings as JSON text."""
        return self.db.execute(
            "SELECT run_id, command, input_path, model_id, status, rows_done, started_at, "
            "finished_at, CAST(settings AS VARCHAR) AS settings FROM runs ORDER BY started_at DESC"
        ).df()

    def refresh_review_facts(self, run_id: str) -> None:
        """(Re)build the run's narrow filter columns when the run has rows they lack."""
        rows_done, facts = self.db.execute(
            "SELECT (SELECT rows_done FROM runs WHERE run_id = $run), "
            "(SELECT count(*) FROM review_facts WHERE run_id = $run)",
            {"run": run_id},
        ).fetchone()
        if rows_done is not None and rows_done == facts:
            return
        with self.transaction() as db:
            db.execute("DELETE FROM review_facts WHERE run_id = $run", {"run": run_id})
            db.execute(_FACTS_SQL, {"run": run_id})

    def text_matches(self, run_id: str, text: str) -> list[int]:
        """Row numbers whose title, body, id, labels (rationales) or a note contain `text`
        (literally: % and _ are not wildcards); kept for the rest of this request."""
        cache = self.__dict__.setdefault("_text_matches", {})
        if (run_id, text) not in cache:
            escaped = re.sub(r"([\\%_])", r"\\\1", text)
            cache[(run_id, text)] = [
                row[0]
                for row in self.db.execute(
                    _TEXT_SQL, {"run": run_id, "text": f"%{escaped}%"}
                ).fetchall()
            ]
        return cache[(run_id, text)]

    def _filter_params(self, run_id: str, review_filter: RowFilter) -> tuple[str, dict[str, Any]]:
        self.refresh_review_facts(run_id)
        narrowing, params = _narrowing(review_filter)
        params = {**_base_params(run_id, review_filter), **params}
        if review_filter.text:
            params["matches"] = self.text_matches(run_id, review_filter.text)
        return narrowing, params

    def count_views(self, run_id: str, review_filter: RowFilter) -> dict[str, int]:
        """How many rows each view holds under the current narrowing, and (`bulk`) how many
        rows of the chosen view a bulk accept would take: open to the reviewer, labelled."""
        narrowing, params = self._filter_params(run_id, review_filter)
        selects = [
            f"count(*) FILTER (WHERE {predicate}) AS {view}"
            for view, predicate in VIEW_PREDICATES.items()
        ]
        selects.append(
            f"count(*) FILTER (WHERE {VIEW_PREDICATES[review_filter.view]} AND {BULK_OPEN})"
        )
        row = self.db.execute(
            _BASE_SQL + f"SELECT {', '.join(selects)} FROM review WHERE {narrowing}",
            {**params, **_threshold_params(review_filter)},
        ).fetchone()
        return dict(zip([*VIEW_PREDICATES, "bulk"], (int(value) for value in row), strict=True))

    def matching_row_numbers(
        self, run_id: str, review_filter: RowFilter, paged: bool = True, extra: str = "TRUE"
    ) -> list[int]:
        """The row numbers of one page (or, `paged=False`, of the whole view), picked on narrow
        columns: bodies and shortlists of the other rows are never touched."""
        narrowing, params = self._filter_params(run_id, review_filter)
        where = f"{VIEW_PREDICATES[review_filter.view]} AND {narrowing} AND {extra}"
        if review_filter.view == "low_confidence":  # DuckDB rejects unused parameters
            params.update(_threshold_params(review_filter))
        sql = _BASE_SQL + (
            f"SELECT row_number FROM review WHERE {where} ORDER BY {_ORDER[review_filter.sort]}"
        )
        if paged:
            sql += " LIMIT $limit OFFSET $offset"
            params["limit"] = review_filter.page_size
            params["offset"] = (review_filter.page - 1) * review_filter.page_size
        return [row[0] for row in self.db.execute(sql, params).fetchall()]

    def page_row_numbers(self, run_id: str, review_filter: RowFilter) -> list[int]:
        return self.matching_row_numbers(run_id, review_filter)

    def review_records(
        self, run_id: str, row_numbers: list[int], reviewer: str = ""
    ) -> dict[int, dict[str, Any]]:
        """Whole rows with their latest decision (`reviewer`'s, when named), by row number."""
        if not row_numbers:
            return {}
        self.refresh_review_facts(run_id)
        frame = self.db.execute(
            _BASE_SQL + "SELECT * FROM review WHERE row_number IN (SELECT unnest($page))",
            {"run": run_id, "me": reviewer, "queue": reviewer, "page": row_numbers},
        ).df()
        return {int(record["row_number"]): record for record in frame.to_dict("records")}

    def review_record(
        self, run_id: str, row_number: int, reviewer: str = ""
    ) -> dict[str, Any] | None:
        return self.review_records(run_id, [row_number], reviewer).get(row_number)

    def call_records(self, call_keys: list[str], wanted: list[str]) -> list[dict[str, Any]]:
        """The `wanted` columns (those present) of these calls, when the store has a `calls`
        table (JSON columns as text)."""
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
        selected = [
            f"CAST({name} AS VARCHAR) AS {name}" if name in JSON_COLUMNS else name
            for name in columns
        ]
        frame = self.db.execute(
            f"SELECT call_key, {', '.join(selected)} FROM calls WHERE call_key IN "
            f"(SELECT unnest($keys))",
            {"keys": sorted(set(call_keys))},
        ).df()
        return frame.to_dict("records")

    def top_label_counts(self, run_id: str) -> list[tuple[str, str | None, int]]:
        """(code, title, rows) for every top label in the run, most frequent first."""
        self.refresh_review_facts(run_id)
        return self.db.execute(
            "SELECT label_code, any_value(label_title), count(*) AS n FROM review_facts "
            "WHERE run_id = ? AND label_code IS NOT NULL "
            "GROUP BY label_code ORDER BY n DESC, label_code",
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
            "undoes",
            "role",
        ]
        decision = {"undoes": None, "role": "review", **decision}
        self.__dict__.pop("_text_matches", None)  # a note may now match
        decision_id, decided_at = self.db.execute(
            f"INSERT INTO review_decisions ({', '.join(columns)}, decided_at) "
            f"VALUES ({', '.join('?' for _ in columns)}, ?) RETURNING decision_id, decided_at",
            [*(decision[name] for name in columns), now()],
        ).fetchone()
        return int(decision_id), decided_at

    def insert_decisions(self, decisions: pd.DataFrame) -> int:
        """Append many decisions (columns of `review_decisions` but id and time) at once: a
        bulk accept of a whole filter is one statement, not one per row."""
        frame = decisions.copy()
        frame["decided_at"] = now()
        self.__dict__.pop("_text_matches", None)
        with self.transaction() as db:
            db.register("bulk_decisions", frame)
            db.execute(
                f"INSERT INTO review_decisions ({', '.join(frame.columns)}) "
                f"SELECT {', '.join(frame.columns)} FROM bulk_decisions"
            )
            db.unregister("bulk_decisions")
        return len(frame)

    def latest_decisions(self, run_id: str | None, only_overrides: bool) -> pd.DataFrame:
        """The gold label per settled reviewed row, joined to its posting."""
        conditions = ["TRUE"]
        params: list[Any] = []
        if run_id:
            conditions.append("d.run_id = ?")
            params.append(run_id)
        if only_overrides:
            conditions.append("d.action = 'override'")
        sql = _EXPORT_SQL.format(conditions=" AND ".join(conditions))
        return self.db.execute(sql, params).df()

    def unsettled_rows(self, run_id: str | None) -> int:
        """Rows whose reviewers disagree and nobody has adjudicated: not gold yet."""
        condition, params = ("d.run_id = ?", [run_id]) if run_id else ("TRUE", [])
        return int(
            self.db.execute(_UNSETTLED_SQL.format(conditions=condition), params).fetchone()[0]
        )
