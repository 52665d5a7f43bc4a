"""Reading a labelling run for audit: which rows a filter shows, and each row as the page shows
it (posting, labels, shortlist, the LLM call behind it, its decisions).

Recording decisions is `review.decisions`, exporting them `review.export`. The SQL (filtering
happens in DuckDB, over narrow per-row facts, so a run of 100,000 rows filters as quickly as a
small one) lives in `store/reviews.py`; this module checks what the auditor asked for and shapes
what the page shows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd

from onet_llm.errors import StoreError
from onet_llm.review.calls import call_panel, redact
from onet_llm.store import Store
from onet_llm.taxonomy import soc_code

View = Literal[
    "all",
    "disagree",
    "low_confidence",
    "problems",
    "unreviewed",
    "reviewed",
    "flagged",
    "reviewers_differ",
]
Sort = Literal["row", "queue", "confidence_asc", "confidence_desc", "margin_asc"]

VIEWS: dict[str, str] = {
    "all": "all rows",
    "disagree": "LLM ≠ embedding top-1",
    "low_confidence": "low confidence",
    "problems": "fallbacks and errors",
    "unreviewed": "not reviewed yet",
    "reviewed": "reviewed",
    "flagged": "unsure or flagged",
    "reviewers_differ": "reviewers disagree",
}
DEFAULT_LOW_CONFIDENCE = 0.5
# Embedding top-1 minus top-2 cosine below which a row counts as low confidence: the same
# default as the cascade's ONET_LLM_UNCERTAIN_MARGIN (measured in the README).
DEFAULT_MARGIN = 0.05
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

SECRET_KEY = re.compile(r"key|token|secret|password|authorization", re.IGNORECASE)


@dataclass(frozen=True)
class ReviewFilter:
    """What the auditor asked to see. `view` picks one of VIEWS; the rest narrow every view."""

    view: View = "all"
    onet_code: str = ""
    major_group: str = ""
    text: str = ""
    low_confidence_below: float = DEFAULT_LOW_CONFIDENCE
    margin_below: float = DEFAULT_MARGIN
    reviewer: str = ""  # who is reviewing: their decisions are the ones shown and counted
    only_queue: bool = False  # only rows in the reviewer's queue
    only_sample: bool = False  # only rows of the run's audit sample
    sort: Sort = "row"
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE

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
            margin_below=_float(query.get("margin"), DEFAULT_MARGIN),
            reviewer=query.get("reviewer", "").strip()[:100],
            only_queue=query.get("queue") == "1",
            only_sample=query.get("sample") == "1",
            sort=sort if sort in get_args(Sort) else "row",  # type: ignore[arg-type]
            page=max(1, int(min(_float(query.get("page"), 1), 10**9))),
            page_size=int(min(MAX_PAGE_SIZE, max(1, _float(query.get("size"), DEFAULT_PAGE_SIZE)))),
        )

    def query(self, **changes: Any) -> dict[str, str]:
        """URL query parameters of this filter with `changes` applied (defaults left out)."""
        values = {
            "view": self.view,
            "code": self.onet_code,
            "major": self.major_group,
            "q": self.text,
            "low": "" if self.low_confidence_below == DEFAULT_LOW_CONFIDENCE else self.low,
            "margin": "" if self.margin_below == DEFAULT_MARGIN else f"{self.margin_below:g}",
            "reviewer": self.reviewer,
            "queue": "1" if self.only_queue else "",
            "sample": "1" if self.only_sample else "",
            "sort": "" if self.sort == "row" else self.sort,
            "page": "" if self.page == 1 else str(self.page),
            "size": "" if self.page_size == DEFAULT_PAGE_SIZE else str(self.page_size),
        }
        values.update({key: str(value) for key, value in changes.items()})
        if values["view"] == "all":
            values["view"] = ""
        return {key: value for key, value in values.items() if value}

    @property
    def low(self) -> str:
        return f"{self.low_confidence_below:g}"

    @property
    def margin(self) -> str:
        return f"{self.margin_below:g}"


def _float(raw: str | None, default: float) -> float:
    try:
        value = float(raw) if raw not in (None, "") else default
    except (ValueError, OverflowError):
        return default
    return value if value == value and abs(value) != float("inf") else default  # NaN, inf


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

    @property
    def input_name(self) -> str:
        return Path(self.input_path).name if self.input_path else "(no input file)"

    @property
    def status_text(self) -> str:
        """`running` is all the store knows of a run that never finished: it may still be
        running, or have been killed."""
        return "unfinished (running or stopped)" if self.status == "running" else self.status


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
    role: str = "review"


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
    margin: float | None
    decision: Decision | None
    labellers: int = 0  # reviewers whose label (accept/override) is in force on the row
    reviewers_differ: bool = False
    queue_position: int | None = None
    in_sample: bool = False
    call: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

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
        if self.decision and self.decision.onet_code:
            return self.decision.onet_code
        return self.label["onet_code"] if self.label else None

    def is_doubtful(self, low_confidence: float, margin: float) -> bool:
        """The page's low-confidence rule (store.reviews.LOW_CONFIDENCE) for this row."""
        return bool(
            (self.confidence is not None and self.confidence < low_confidence)
            or (self.margin is not None and self.margin < margin)
            or self.disagrees
        )


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
    """How many rows each view holds under the current occupation/group/text narrowing, and
    under `bulk` how many of the chosen view's rows a bulk accept would take."""
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
    return load_rows(store, run_id, page, review_filter.reviewer), counts[review_filter.view]


def load_rows(store: Store, run_id: str, row_numbers: list[int], reviewer: str) -> list[ReviewRow]:
    """These rows, whole, with their LLM call and decision history, in the order given."""
    by_number = store.review_records(run_id, row_numbers, reviewer)
    rows = [review_row_from_record(by_number[number]) for number in row_numbers]
    calls = call_panel(store, [row.call_key for row in rows if row.call_key])
    history: dict[int, list[dict[str, Any]]] = {}
    for entry in store.decision_history(run_id, row_numbers):
        history.setdefault(int(entry["row_number"]), []).append(entry)
    for row in rows:
        row.call = calls.get(row.call_key or "", {})
        row.history = history.get(row.row_number, [])
    return rows


def review_row_from_record(record: dict[str, Any]) -> ReviewRow:
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
            role=_text_or_none(record["role"]) or "review",
        )
    confidence, margin = record["confidence"], record["margin"]
    position = record["queue_position"]
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
        margin=None if pd.isna(margin) else float(margin),
        decision=decision,
        labellers=int(record["labellers"]),
        reviewers_differ=bool(record["reviewers_differ"]),
        queue_position=None if pd.isna(position) else int(position),
        in_sample=bool(record["in_sample"]),
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


def major_group_of(onet_code: str) -> str:
    return soc_code(onet_code, "major")
