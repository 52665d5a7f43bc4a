"""Reviewed labels out of the store, as gold data for `train --data` and `eval --data`.

`id, title, body, onet_code` is the layout both read, so an export is training or evaluation
data as it is; the other columns are provenance. Per row the newest accept or override in force
counts when the reviewers agree; where they disagree an adjudication newer than their reviews
settles it, and until then the row is left out (and counted). Unsure, flagged and undone rows
are left out. CSV cells that a spreadsheet would run as a formula get a leading `'`
(`tables.neutralise_formula`); Parquet and JSONL keep the raw values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from onet_llm.review.queries import resolve_run
from onet_llm.store import Store
from onet_llm.tables import TableWriter, neutralise_formulas, table_format

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


def decisions_frame(
    store: Store, run_id: str | None = None, only_overrides: bool = False
) -> pd.DataFrame:
    """The label in force per reviewed row, joined to its posting, in EXPORT_COLUMNS order."""
    frame = store.latest_decisions(run_id, only_overrides)
    return frame.reindex(columns=EXPORT_COLUMNS)


def decisions_csv(store: Store, run_id: str | None = None, only_overrides: bool = False) -> str:
    """The export as CSV text (the page's download), formula-like cells neutralised."""
    return neutralise_formulas(decisions_frame(store, run_id, only_overrides)).to_csv(index=False)


@dataclass(frozen=True)
class ExportSummary:
    rows: int
    left_out: int  # decisions on rows without a title: `train --data` cannot use them
    unsettled: int = 0  # rows whose reviewers disagree, not adjudicated yet


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
            writer.write(frame)  # CSV, TSV and Excel cells are neutralised by the writer
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return ExportSummary(rows=len(frame), left_out=left_out, unsettled=store.unsettled_rows(run_id))
