"""Agreement between reviewers on the rows two of them were given: percent agreement and
Cohen's kappa (agreement corrected for what two reviewers with the same label frequencies would
reach by chance).

Cohen, J. (1960). A coefficient of agreement for nominal scales. Educational and Psychological
Measurement 20(1): 37-46. kappa = (p_o - p_e) / (1 - p_e), p_o the observed share of rows with
the same occupation, p_e the sum over occupations of the product of each reviewer's share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from onet_llm.store import Store


@dataclass(frozen=True)
class PairAgreement:
    """Two reviewers on the rows both have labelled. `kappa` is None when it is undefined
    (no rows, or both gave one and the same occupation to every row: p_e = 1)."""

    first: str
    second: str
    rows: int
    agreed: int
    kappa: float | None

    @property
    def percent(self) -> float | None:
        return 100.0 * self.agreed / self.rows if self.rows else None


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two equally long label sequences (row i labelled by both)."""
    if len(first) != len(second):
        raise ValueError("both reviewers must label the same rows")
    rows = len(first)
    if rows == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / rows
    first_counts, second_counts = Counter(first), Counter(second)
    chance = sum(first_counts[code] * second_counts[code] for code in first_counts) / rows**2
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


def pair_agreements(labels: pd.DataFrame) -> list[PairAgreement]:
    """One PairAgreement per pair of reviewers sharing rows, from (row_number, reviewer,
    onet_code) records; reviewers in a pair are in name order."""
    by_row: dict[int, dict[str, str]] = {}
    for row_number, reviewer, code in labels[["row_number", "reviewer", "onet_code"]].itertuples(
        index=False
    ):
        by_row.setdefault(int(row_number), {})[reviewer] = code
    pairs: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for codes in by_row.values():
        names = sorted(codes)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                left, right = pairs.setdefault((first, second), ([], []))
                left.append(codes[first])
                right.append(codes[second])
    return [
        PairAgreement(
            first=first,
            second=second,
            rows=len(left),
            agreed=sum(a == b for a, b in zip(left, right, strict=True)),
            kappa=cohen_kappa(left, right),
        )
        for (first, second), (left, right) in sorted(pairs.items())
    ]


def run_agreement(store: Store, run_id: str) -> list[PairAgreement]:
    """Agreement per reviewer pair on the overlap rows of the run's newest assignment."""
    return pair_agreements(store.overlap_labels(run_id))
