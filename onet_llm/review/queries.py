"""Auditing a labelling run: filter its rows, record accept/override decisions, export them.

The review page (`review/web.py`) and `onet-llm review export` both sit on these functions.
Decisions are appended, never updated: the latest one per row counts, and each keeps the label
it replaced, the reviewer and the time, so the audit trail is complete. The SQL (filtering
happens in DuckDB, so a run of millions of rows pages as quickly as a small one) lives in
`store/reviews.py`; this module checks what the auditor asked for and shapes what the page shows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

import pandas as pd

from onet_llm.errors import StoreError
from onet_llm.store import Store

View = Literal["all", "disagree", "low_confidence", "problems", "unreviewed", "reviewed"]
Sort = Literal["row", "confidence_asc", "confidence_desc"]
Action = Literal["accept", "override"]

VIEWS: dict[str, str] = {
    "all": "all rows",
    "disagree": "LLM disagrees with embedding top-1",
    "low_confidence": "low confidence",
    "problems": "fallbacks and errors",
    "unreviewed": "not reviewed yet",
    "reviewed": "reviewed",
}
DEFAULT_LOW_CONFIDENCE = 0.5
MAX_REVIEWER_CHARACTERS = 100
MAX_NOTE_CHARACTERS = 2000

# Columns of the LLM stage's `calls` table worth showing an auditor, in display order. Only
# those present are read; request payloads are never shown.
CALL_COLUMNS = [
    "model",
    "prompt_version",
    "status",
    "error",
    "attempts",
    "validation_retries",
    "transport_retries",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "latency_s",
    "created_at",
    "response_parsed",
    "response_raw",
]
SECRET_KEY = re.compile(r"key|token|secret|password|authorization", re.IGNORECASE)
SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+\S+)")


@dataclass(frozen=True)
class ReviewFilter:
    """What the auditor asked to see. `view` picks one of VIEWS; the rest narrow every view."""

    view: View = "all"
    onet_code: str = ""
    major_group: str = ""
    text: str = ""
    low_confidence_below: float = DEFAULT_LOW_CONFIDENCE
    sort: Sort = "row"
    page: int = 1
    page_size: int = 50

    @classmethod
    def from_query(cls, query: dict[str, str]) -> ReviewFilter:
        """Build from URL query parameters, falling back to defaults on anything malformed
        (a hand-edited URL should show a page, not an error)."""
        view = query.get("view", "all")
        sort = query.get("sort", "row")
        return cls(
            view=view if view in VIEWS else "all",  # type: ignore[arg-type]
            onet_code=query.get("code", "").strip(),
            major_group=query.get("major", "").strip(),
            text=query.get("q", "").strip()[:200],
            low_confidence_below=_float(query.get("low"), DEFAULT_LOW_CONFIDENCE),
            sort=sort if sort in get_args(Sort) else "row",  # type: ignore[arg-type]
            page=max(1, int(_float(query.get("page"), 1))),
        )

    def query(self, **changes: Any) -> dict[str, str]:
        """URL query parameters of this filter with `changes` applied (defaults left out)."""
        values = {
            "view": self.view,
            "code": self.onet_code,
            "major": self.major_group,
            "q": self.text,
            "low": "" if self.low_confidence_below == DEFAULT_LOW_CONFIDENCE else self.low,
            "sort": "" if self.sort == "row" else self.sort,
            "page": "" if self.page == 1 else str(self.page),
        }
        values.update({key: str(value) for key, value in changes.items()})
        if values["view"] == "all":
            values["view"] = ""
        return {key: value for key, value in values.items() if value}

    @property
    def low(self) -> str:
        return f"{self.low_confidence_below:g}"


def _float(raw: str | None, default: float) -> float:
    try:
        value = float(raw) if raw not in (None, "") else default
    except ValueError:
        return default
    return value if value == value else default  # NaN


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    command: str
    input_path: str | None
    model_id: str | None
    status: str
    rows_done: int
    started_at: datetime
    finished_at: datetime | None
    settings: dict[str, str]


@dataclass(frozen=True)
class Decision:
    decision_id: int
    action: str
    onet_code: str
    onet_title: str
    previous_onet_code: str | None
    previous_onet_title: str | None
    reviewer: str
    note: str
    decided_at: datetime


@dataclass
class ReviewRow:
    """One posting as the page shows it."""

    row_number: int
    posting_id: str
    title: str
    body: str
    source: str
    error: str
    call_key: str | None
    shortlist: list[dict]  # [{onet_code, onet_title, score, label_rank}] best first
    labels: list[dict]  # [{onet_code, onet_title, score, rationale?, confidence?, ...}]
    confidence: float | None
    decision: Decision | None
    call: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> dict | None:
        return self.labels[0] if self.labels else None

    @property
    def embedding_top(self) -> dict | None:
        return self.shortlist[0] if self.shortlist else None

    @property
    def disagrees(self) -> bool:
        return bool(
            self.source == "llm"
            and self.label
            and self.embedding_top
            and self.label["onet_code"] != self.embedding_top["onet_code"]
        )

    @property
    def current_code(self) -> str | None:
        """The label as it stands now: the latest decision's, else the run's top label."""
        if self.decision:
            return self.decision.onet_code
        return self.label["onet_code"] if self.label else None


# -- reading ---------------------------------------------------------------------------------


def list_runs(store: Store) -> list[RunSummary]:
    """Every run in the store, newest first."""
    frame = store.run_summaries()
    return [
        RunSummary(
            run_id=row.run_id,
            command=row.command,
            input_path=row.input_path,
            model_id=row.model_id,
            status=row.status,
            rows_done=int(row.rows_done),
            started_at=row.started_at,
            finished_at=None if pd.isna(row.finished_at) else row.finished_at,
            settings=settings_for_display(row.settings),
        )
        for row in frame.itertuples(index=False)
    ]


def resolve_run(store: Store, run_id: str | None) -> RunSummary:
    """The named run, or the newest one when none is named."""
    runs = list_runs(store)
    if not runs:
        raise StoreError(f"{store.path}: no labelling runs yet (run `onet-llm label` first)")
    if not run_id:
        return runs[0]
    for run in runs:
        if run.run_id == run_id:
            return run
    known = ", ".join(run.run_id for run in runs[:5])
    raise StoreError(f"{store.path}: no run {run_id!r} (latest runs: {known})")


def filter_counts(store: Store, run_id: str, review_filter: ReviewFilter) -> dict[str, int]:
    """How many rows each view holds under the current occupation/group/text narrowing."""
    return store.count_views(run_id, review_filter)


def review_rows(
    store: Store,
    run_id: str,
    review_filter: ReviewFilter,
    counts: dict[str, int] | None = None,
) -> tuple[list[ReviewRow], int]:
    """One page of rows in the chosen view and order, and how many rows match in all (taken
    from `counts` when the caller has them already)."""
    if counts is None:
        counts = filter_counts(store, run_id, review_filter)
    page = store.page_row_numbers(run_id, review_filter)
    by_number = store.review_records(run_id, page)
    rows = [row_from_record(by_number[number]) for number in page]
    calls = _calls(store, [row.call_key for row in rows if row.call_key])
    for row in rows:
        row.call = calls.get(row.call_key or "", {})
    return rows, counts[review_filter.view]


def row_from_record(record: dict[str, Any]) -> ReviewRow:
    labels = _json_list(record["labels"])
    label_rank = {label.get("onet_code"): rank for rank, label in enumerate(labels, start=1)}
    shortlist = [
        {**candidate, "label_rank": label_rank.get(candidate.get("onet_code"))}
        for candidate in _json_list(record["shortlist"])
    ]
    decision = None
    if not pd.isna(record["decision_id"]):
        decision = Decision(
            decision_id=int(record["decision_id"]),
            action=record["action"],
            onet_code=record["decision_code"],
            onet_title=record["decision_title"],
            previous_onet_code=_text_or_none(record["previous_onet_code"]),
            previous_onet_title=_text_or_none(record["previous_onet_title"]),
            reviewer=record["reviewer"],
            note=_text_or_none(record["note"]) or "",
            decided_at=record["decided_at"],
        )
    confidence = record["confidence"]
    return ReviewRow(
        row_number=int(record["row_number"]),
        posting_id=_text_or_none(record["posting_id"]) or "",
        title=_text_or_none(record["title"]) or "",
        body=_text_or_none(record["body"]) or "",
        source=_text_or_none(record["source"]) or "",
        error=_text_or_none(record["error"]) or "",
        call_key=_text_or_none(record["call_key"]),
        shortlist=shortlist,
        labels=labels,
        confidence=None if pd.isna(confidence) else float(confidence),
        decision=decision,
    )


def _json_list(value: Any) -> list[dict]:
    if not isinstance(value, str) or not value:
        return []
    parsed = json.loads(value)
    return [item for item in parsed if isinstance(item, dict)] if isinstance(parsed, list) else []


def _text_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value)


def _calls(store: Store, call_keys: list[str]) -> dict[str, dict[str, Any]]:
    """The LLM calls behind these rows, when the store has a `calls` table."""
    records = store.call_records(call_keys, CALL_COLUMNS)
    calls: dict[str, dict[str, Any]] = {}
    for record in records:
        key = record.pop("call_key")
        calls[key] = {
            name: redact(str(value))
            for name, value in record.items()
            if value is not None and not (isinstance(value, float) and value != value)
        }
    return calls


def run_occupations(store: Store, run_id: str) -> list[tuple[str, str, int]]:
    """(code, title, rows) for every top label in the run, most frequent first: the page's
    occupation filter offers exactly these."""
    return [
        (code, title or "", int(count)) for code, title, count in store.top_label_counts(run_id)
    ]


def settings_for_display(raw: str | None) -> dict[str, str]:
    """A run's settings, flattened, with anything that looks like a secret removed."""
    try:
        settings = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif SECRET_KEY.search(prefix.rsplit(".", 1)[-1]) and not prefix.endswith("index_key"):
            flat[prefix] = "(redacted)"
        else:
            flat[prefix] = redact(str(value))

    walk("", settings if isinstance(settings, dict) else {})
    return flat


def redact(text: str) -> str:
    """Blank out API-key and bearer-token shaped strings before anything reaches the page."""
    return SECRET_VALUE.sub("(redacted)", text)
