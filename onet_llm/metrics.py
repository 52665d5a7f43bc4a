"""Ranking metrics for predicted O*NET codes against gold codes, at any SOC level.

Predictions are ranked lists of O*NET codes, best first. At a coarser level (SOC 6-digit,
major group) a prediction counts at the rank of the first code that matches the gold code's
prefix, so two predicted occupations in the same major group do not count twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onet_llm.taxonomy import SocLevel, soc_code


def first_hit_rank(predicted: Sequence[str], gold: str, level: SocLevel = "onet") -> int | None:
    """1-based rank of the first prediction matching `gold` at `level`, or None."""
    target = soc_code(gold, level)
    for rank, code in enumerate(predicted, start=1):
        if code and soc_code(code, level) == target:
            return rank
    return None


def hit_ranks(
    predictions: Sequence[Sequence[str]], golds: Sequence[str], level: SocLevel = "onet"
) -> list[int | None]:
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold codes")
    return [first_hit_rank(p, g, level) for p, g in zip(predictions, golds, strict=True)]


def accuracy_at(ranks: Sequence[int | None], k: int) -> float:
    """Share of rows whose first hit is within the top k."""
    if not ranks:
        return float("nan")
    return float(np.mean([rank is not None and rank <= k for rank in ranks]))


def mean_reciprocal_rank(ranks: Sequence[int | None], cutoff: int = 10) -> float:
    """MRR@cutoff: 1/rank of the first hit, 0 when it falls past the cutoff or is missing."""
    if not ranks:
        return float("nan")
    return float(
        np.mean([1 / rank if rank is not None and rank <= cutoff else 0.0 for rank in ranks])
    )


def ranking_summary(
    predictions: Sequence[Sequence[str]],
    golds: Sequence[str],
    level: SocLevel = "onet",
    ks: Sequence[int] = (1, 3, 5, 10, 20),
) -> dict[str, float]:
    """top-k accuracies and MRR@10 in one dict, for tables."""
    ranks = hit_ranks(predictions, golds, level)
    summary = {f"top{k}": accuracy_at(ranks, k) for k in ks}
    summary["mrr10"] = mean_reciprocal_rank(ranks, 10)
    summary["n"] = float(len(ranks))
    return summary
