"""Splitting a run (or its audit sample) into per-reviewer queues, with a share of rows that two
reviewers see, so that their agreement can be measured.

The split is seeded and recorded (`review_queues`); a newer `review assign` supersedes an older
one without deleting it. Overlap rows rotate through every pair of reviewers, so each pair
shares about the same number of rows; the rest are dealt out in turn. Each queue is in input
order.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from onet_llm.errors import InputError
from onet_llm.review.agreement import PairAgreement, run_agreement
from onet_llm.store import Store

MAX_REVIEWERS = 50


@dataclass(frozen=True)
class Assignment:
    assignment_id: int
    rows: int
    overlap_rows: int
    queues: dict[str, int]  # reviewer -> rows in their queue


@dataclass(frozen=True)
class ReviewerProgress:
    reviewer: str
    assigned: int
    decided: int
    overlap: int

    @property
    def percent(self) -> float:
        return 100.0 * self.decided / self.assigned if self.assigned else 0.0


def parse_reviewers(raw: str) -> list[str]:
    """`a,b,c` -> names, each once, in the order given."""
    names = list(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))
    if not names:
        raise InputError("--reviewers needs at least one name (e.g. --reviewers ana,ben)")
    if len(names) > MAX_REVIEWERS or any(len(name) > 100 for name in names):
        raise InputError(f"--reviewers takes at most {MAX_REVIEWERS} names of 100 characters")
    return names


def split_rows(
    row_numbers: list[int], reviewers: list[str], overlap: float, seed: int
) -> list[tuple[str, int, int, bool]]:
    """(reviewer, row_number, position, overlap) for every queue entry."""
    if not 0.0 <= overlap <= 1.0:
        raise InputError(f"--overlap is a share of rows between 0 and 1, got {overlap:g}")
    if overlap > 0 and len(reviewers) < 2:
        raise InputError("--overlap needs at least two reviewers")
    shuffled = np.random.default_rng(seed).permutation(np.array(row_numbers, dtype=np.int64))
    shared = round(overlap * len(shuffled))
    pairs = list(combinations(reviewers, 2))
    entries: dict[str, list[tuple[int, bool]]] = {name: [] for name in reviewers}
    for index, row_number in enumerate(shuffled.tolist()):
        if index < shared:
            for name in pairs[index % len(pairs)]:
                entries[name].append((row_number, True))
        else:
            entries[reviewers[(index - shared) % len(reviewers)]].append((row_number, False))
    return [
        (name, row_number, position, is_shared)
        for name, rows in entries.items()
        for position, (row_number, is_shared) in enumerate(sorted(rows), start=1)
    ]


def assign_queues(
    store: Store,
    run_id: str,
    reviewers: list[str],
    overlap: float,
    seed: int = 0,
    from_sample: bool = False,
) -> Assignment:
    """Split the run's rows (or its newest audit sample's) into queues and record them."""
    if from_sample:
        row_numbers = [int(n) for n in store.sample_outcomes(run_id)["row_number"]]
        if not row_numbers:
            raise InputError(f"run {run_id} has no audit sample yet (run `review sample` first)")
    else:
        row_numbers = [int(n) for n in store.run_row_facts(run_id)["row_number"]]
        if not row_numbers:
            raise InputError(f"run {run_id} has no rows to assign")
    entries = split_rows(row_numbers, reviewers, overlap, seed)
    assignment_id = store.save_queues(run_id, entries)
    queues = {name: sum(entry[0] == name for entry in entries) for name in reviewers}
    return Assignment(
        assignment_id=assignment_id,
        rows=len(row_numbers),
        overlap_rows=round(overlap * len(row_numbers)),
        queues=queues,
    )


def queue_progress(store: Store, run_id: str) -> list[ReviewerProgress]:
    return [ReviewerProgress(*row) for row in store.queue_progress(run_id)]


@dataclass(frozen=True)
class AgreementSummary:
    progress: list[ReviewerProgress]
    pairs: list[PairAgreement]


def agreement_summary(store: Store, run_id: str) -> AgreementSummary:
    """What the page's queue panel shows: each reviewer's progress and each pair's agreement."""
    return AgreementSummary(
        progress=queue_progress(store, run_id), pairs=run_agreement(store, run_id)
    )
