"""Recording what an auditor decided about a row: accept, override, unsure, flag, comment, undo,
and bulk accept. Every decision is a new row of `review_decisions`; nothing is updated.

- accept / override settle the row's label (an override names the occupation);
- unsure / flag mark it for someone else (no label; the disagreement and flagged views find it);
- comment adds a note and changes nothing else;
- undo retracts the reviewer's newest decision in force on the row (itself recorded).
A decision made from the disagreement view is an adjudication: it settles the row and is left
out of the agreement figures, which compare the reviewers' own labels.
"""

from __future__ import annotations

from typing import Literal, get_args

import pandas as pd

from onet_llm.errors import InputError
from onet_llm.review.queries import (
    Decision,
    ReviewFilter,
    ReviewRow,
    review_row_from_record,
)
from onet_llm.store import Store
from onet_llm.store.reviews import BULK_OPEN
from onet_llm.taxonomy import Taxonomy

Action = Literal["accept", "override", "unsure", "flag", "comment", "undo"]
Role = Literal["review", "adjudication"]
MAX_REVIEWER_CHARACTERS = 100
MAX_NOTE_CHARACTERS = 2000
MAX_BULK_ROWS = 100_000


def _check_names(reviewer: str, note: str) -> None:
    if not reviewer:
        raise InputError("a decision needs a reviewer name")
    if len(reviewer) > MAX_REVIEWER_CHARACTERS or len(note) > MAX_NOTE_CHARACTERS:
        raise InputError(
            f"reviewer names are at most {MAX_REVIEWER_CHARACTERS} characters and notes at most "
            f"{MAX_NOTE_CHARACTERS}"
        )


def _one_row(store: Store, run_id: str, row_number: int, reviewer: str) -> ReviewRow:
    record = store.review_record(run_id, row_number, reviewer)
    if record is None:
        raise InputError(f"run {run_id} has no row {row_number}")
    return review_row_from_record(record)


def record_decision(
    store: Store,
    taxonomy: Taxonomy,
    run_id: str,
    row_number: int,
    action: Action,
    reviewer: str,
    onet_code: str | None = None,
    note: str = "",
    role: Role = "review",
) -> Decision:
    """Append one decision by `reviewer` on the row (see the module docstring)."""
    reviewer, note = reviewer.strip(), note.strip()
    _check_names(reviewer, note)
    if action not in get_args(Action):
        raise InputError(
            f"unknown decision {action!r} (use accept, override, unsure, flag, comment or undo)"
        )
    if role not in get_args(Role):
        raise InputError(f"unknown role {role!r} (use review or adjudication)")
    row = _one_row(store, run_id, row_number, reviewer)
    previous = row.current_code
    undoes = None
    if action == "undo":
        undoes = store.last_decision_in_force(run_id, row_number, reviewer)
        if undoes is None:
            raise InputError(f"{reviewer} has no decision on row {row_number} to undo")
    if action == "override":
        chosen = (onet_code or "").strip()
        if chosen not in taxonomy:
            raise InputError(f"{chosen!r} is not an O*NET 30.1 occupation code")
        if chosen == previous:
            action = "accept"
    elif action == "accept":
        if previous is None:
            raise InputError(f"row {row_number} has no label to accept; override it instead")
        chosen = previous
    else:  # unsure, flag, comment, undo: the label stays what it was
        chosen = previous or ""
    values = {
        "run_id": run_id,
        "row_number": row_number,
        "posting_id": row.posting_id,
        "action": action,
        "onet_code": chosen,
        "onet_title": taxonomy.title(chosen) if chosen in taxonomy else "",
        "previous_onet_code": previous,
        "previous_onet_title": taxonomy.title(previous) if previous in taxonomy else None,
        "reviewer": reviewer,
        "note": note,
        "undoes": undoes,
        "role": role,
    }
    decision_id, decided_at = store.insert_decision(values)
    return Decision(
        decision_id=decision_id,
        action=action,
        onet_code=chosen,
        onet_title=values["onet_title"],
        previous_onet_code=previous,
        previous_onet_title=values["previous_onet_title"],
        reviewer=reviewer,
        note=note,
        decided_at=decided_at,
        role=role,
    )


def bulk_accept_rows(
    store: Store, run_id: str, review_filter: ReviewFilter, row_numbers: list[int] | None = None
) -> list[int]:
    """The rows a bulk accept by `review_filter.reviewer` would accept: those of the filter (or
    only `row_numbers`, the rows on screen, when given) that have a label and no decision of
    theirs yet. The confirmation names their count before anything is written."""
    rows = store.matching_row_numbers(run_id, review_filter, paged=False, extra=BULK_OPEN)
    if row_numbers is not None:
        wanted = set(row_numbers)
        rows = [row for row in rows if row in wanted]
    return rows


def bulk_accept(
    store: Store,
    taxonomy: Taxonomy,
    run_id: str,
    review_filter: ReviewFilter,
    row_numbers: list[int] | None = None,
    expected: int | None = None,
) -> int:
    """Accept the top label of every row `bulk_accept_rows` names, in one transaction.
    `expected` is the count the reviewer confirmed: if the rows changed since (someone else
    decided some), nothing is written and the reviewer is asked again."""
    reviewer = review_filter.reviewer.strip()
    _check_names(reviewer, "")
    rows = bulk_accept_rows(store, run_id, review_filter, row_numbers)
    if expected is not None and expected != len(rows):
        raise InputError(
            f"the rows changed: {len(rows)} would be accepted now, not {expected}; confirm again"
        )
    if len(rows) > MAX_BULK_ROWS:
        raise InputError(f"a bulk accept takes at most {MAX_BULK_ROWS:,} rows; narrow the filter")
    if not rows:
        return 0
    facts = store.run_row_facts(run_id).set_index("row_number")
    frame = pd.DataFrame(
        [
            {
                "run_id": run_id,
                "row_number": number,
                "posting_id": facts.at[number, "posting_id"],
                "action": "accept",
                "onet_code": code,
                "onet_title": taxonomy.title(code),
                "previous_onet_code": code,
                "previous_onet_title": taxonomy.title(code),
                "reviewer": reviewer,
                "note": "bulk accept",
                "undoes": None,
                "role": "review",
            }
            for number in rows
            if (code := facts.at[number, "label_code"]) in taxonomy
        ]
    )
    return store.insert_decisions(frame) if not frame.empty else 0
