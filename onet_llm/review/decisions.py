"""Deciding and exporting: an auditor's accept or override of a row's top label, appended to
the store (never updated: the latest decision per row counts, and each keeps the label it
replaced, the reviewer and the time), and the export of those decisions as training or
evaluation data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import pandas as pd

from onet_llm.errors import InputError
from onet_llm.review.queries import (
    MAX_NOTE_CHARACTERS,
    MAX_REVIEWER_CHARACTERS,
    Action,
    Decision,
    ReviewRow,
    resolve_run,
    row_from_record,
)
from onet_llm.store import Store
from onet_llm.tables import TableWriter, table_format
from onet_llm.taxonomy import Taxonomy, soc_code

EXPORT_COLUMNS = [
    "id",
    "title",
    "body",
    "onet_code",
    "onet_title",
    "previous_onet_code",
    "previous_onet_title",
    "decision",
    "source",
    "reviewer",
    "note",
    "decided_at",
    "run_id",
    "row_number",
]

# -- deciding --------------------------------------------------------------------------------


def record_decision(
    store: Store,
    taxonomy: Taxonomy,
    run_id: str,
    row_number: int,
    action: Action,
    reviewer: str,
    onet_code: str | None = None,
    note: str = "",
) -> Decision:
    """Append an accept (of the row's current label) or an override (to `onet_code`)."""
    reviewer = reviewer.strip()
    note = note.strip()
    if not reviewer:
        raise InputError("a decision needs a reviewer name")
    if len(reviewer) > MAX_REVIEWER_CHARACTERS or len(note) > MAX_NOTE_CHARACTERS:
        raise InputError(
            f"reviewer names are at most {MAX_REVIEWER_CHARACTERS} characters and notes at most "
            f"{MAX_NOTE_CHARACTERS}"
        )
    if action not in get_args(Action):
        raise InputError(f"unknown decision {action!r} (use accept or override)")
    row = _one_row(store, run_id, row_number)
    previous = row.current_code
    if action == "accept":
        if previous is None:
            raise InputError(f"row {row_number} has no label to accept; override it instead")
        chosen = previous
    else:
        chosen = (onet_code or "").strip()
        if chosen not in taxonomy:
            raise InputError(f"{chosen!r} is not an O*NET 30.1 occupation code")
        if chosen == previous:
            action = "accept"
    decision_id, decided_at = store.insert_decision(
        {
            "run_id": run_id,
            "row_number": row_number,
            "posting_id": row.posting_id,
            "action": action,
            "onet_code": chosen,
            "onet_title": taxonomy.title(chosen),
            "previous_onet_code": previous,
            "previous_onet_title": taxonomy.title(previous) if previous in taxonomy else None,
            "reviewer": reviewer,
            "note": note,
        }
    )
    return Decision(
        decision_id=int(decision_id),
        action=action,
        onet_code=chosen,
        onet_title=taxonomy.title(chosen),
        previous_onet_code=previous,
        previous_onet_title=taxonomy.title(previous) if previous in taxonomy else None,
        reviewer=reviewer,
        note=note,
        decided_at=decided_at,
    )


def _one_row(store: Store, run_id: str, row_number: int) -> ReviewRow:
    record = store.review_record(run_id, row_number)
    if record is None:
        raise InputError(f"run {run_id} has no row {row_number}")
    return row_from_record(record)


# -- exporting -------------------------------------------------------------------------------


def decisions_frame(
    store: Store, run_id: str | None = None, only_overrides: bool = False
) -> pd.DataFrame:
    """The latest decision per reviewed row, joined to its posting, in EXPORT_COLUMNS order.

    `id, title, body, onet_code` is the layout `train --data` and `eval --data` read, so an
    export is ready to use as training or evaluation data; the other columns are provenance.
    """
    frame = store.latest_decisions(run_id, only_overrides)
    return frame.reindex(columns=EXPORT_COLUMNS)


@dataclass(frozen=True)
class ExportSummary:
    rows: int
    left_out: int  # decisions on rows without a title: `train --data` cannot use them


def export_decisions(
    store: Store, out: Path, run_id: str | None = None, only_overrides: bool = False
) -> ExportSummary:
    """Write the decisions to `out` (.csv, .parquet or .jsonl) atomically.

    Rows without a title (empty postings an auditor labelled anyway) are left out and counted,
    because `train --data` and `eval --data` reject them."""
    table_format(out)
    if run_id:
        resolve_run(store, run_id)
    frame = decisions_frame(store, run_id, only_overrides)
    usable = frame["title"].fillna("").str.strip() != ""
    left_out = int((~usable).sum())
    frame = frame[usable]
    writer = TableWriter(out)
    try:
        if writer.format == "jsonl":
            writer.write(frame.astype(object).where(frame.notna(), None).to_dict("records"))
        else:
            writer.write(frame)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return ExportSummary(rows=len(frame), left_out=left_out)


def major_group_of(onet_code: str) -> str:
    return soc_code(onet_code, "major")
