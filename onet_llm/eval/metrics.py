"""Ranking metrics for predicted O*NET codes against gold codes, at any SOC level.

Predictions are ranked lists of O*NET codes, best first. At a coarser level (SOC 6-digit,
major group) a prediction counts at the rank of the first code that matches the gold code's
prefix, so two predicted occupations in the same major group do not count twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onet_llm.taxonomy import SocLevel, soc_code

LEVELS: tuple[SocLevel, ...] = ("onet", "detailed", "major")
LEVEL_NAMES: dict[str, str] = {
    "onet": "8-digit O*NET",
    "detailed": "6-digit SOC",
    "major": "2-digit major group",
}
KS: tuple[int, ...] = (1, 3, 5, 10)
METRICS: tuple[str, ...] = ("top1", "top3", "top5", "top10", "mrr10")


def first_hit_rank(
    predicted: Sequence[str] | None, gold: str, level: SocLevel = "onet"
) -> int | None:
    """1-based rank of the first prediction matching `gold` at `level`, or None.

    Ranks are list positions, not scores: tied scores keep the order the product showed, and
    a duplicated or empty entry still takes up its position. A prediction given at a coarser
    level (e.g. the SOC code '15-1252') matches only at the levels it carries. A 6-digit gold
    code carries no 8-digit occupation: it is scored at 6 digits there too (any occupation
    inside it counts), and the report says how many rows that concerns.
    """
    if level == "onet" and "." not in gold:
        level = "detailed"
    target = soc_code(gold, level)
    for rank, code in enumerate(predicted or [], start=1):
        if code and soc_code(code, level) == target:
            return rank
    return None


def hit_ranks(
    predictions: Sequence[Sequence[str] | None], golds: Sequence[str], level: SocLevel = "onet"
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


# -- per-row values, for intervals and paired comparisons --------------------------------------


def hits_at(ranks: Sequence[int | None], k: int) -> np.ndarray:
    """Per-row 1.0/0.0: is the first hit within the top k? (The mean is `accuracy_at`.)"""
    return np.array([rank is not None and rank <= k for rank in ranks], dtype=np.float64)


def reciprocal_ranks(ranks: Sequence[int | None], cutoff: int = 10) -> np.ndarray:
    """Per-row 1/rank within the cutoff, else 0. (The mean is `mean_reciprocal_rank`.)"""
    return np.array(
        [1 / rank if rank is not None and rank <= cutoff else 0.0 for rank in ranks],
        dtype=np.float64,
    )


def metric_values(ranks: Sequence[int | None], metric: str) -> np.ndarray:
    """Per-row values of a named metric: 'topK' (e.g. 'top5') or 'mrrK' (e.g. 'mrr10')."""
    if metric.startswith("top"):
        return hits_at(ranks, int(metric[3:]))
    if metric.startswith("mrr"):
        return reciprocal_ranks(ranks, int(metric[3:]))
    raise ValueError(f"unknown metric {metric!r} (use topK or mrrK)")


def is_abstention(predicted: Sequence[str] | None) -> bool:
    """A row with no usable prediction: nothing returned, or only empty codes."""
    return not predicted or not any(code for code in predicted)


def abstain_rate(predictions: Sequence[Sequence[str] | None]) -> float:
    """Share of rows the mode left without any label (they count as misses everywhere)."""
    if not predictions:
        return float("nan")
    return float(np.mean([is_abstention(predicted) for predicted in predictions]))


def shortlist_recall(
    shortlists: Sequence[Sequence[str]], golds: Sequence[str], level: SocLevel = "onet"
) -> float:
    """Share of rows whose gold occupation is anywhere on the shortlist: the ceiling of any
    rerank that only reorders the shortlist."""
    ranks = hit_ranks(shortlists, golds, level)
    return float(np.mean([rank is not None for rank in ranks])) if ranks else float("nan")


# -- intervals ---------------------------------------------------------------------------------


def bootstrap_indices(n_rows: int, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """(resamples, n_rows) row indices drawn with replacement. Reusing one matrix for every mode
    makes the resamples paired: each resample scores all modes on the same rows."""
    generator = np.random.default_rng(seed)
    return generator.integers(0, n_rows, size=(resamples, n_rows))


def bootstrap_interval(
    values: np.ndarray, indices: np.ndarray, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-row `values`."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    means = values[indices].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_difference(
    values_a: np.ndarray, values_b: np.ndarray, indices: np.ndarray, confidence: float = 0.95
) -> dict[str, float]:
    """Mean of b - a over the same rows, its percentile bootstrap interval, and a two-sided
    bootstrap p-value (twice the share of resamples on the far side of zero, capped at 1)."""
    values_a = np.asarray(values_a, dtype=np.float64)
    values_b = np.asarray(values_b, dtype=np.float64)
    if values_a.shape != values_b.shape:
        raise ValueError(f"paired values differ in length: {values_a.size} vs {values_b.size}")
    differences = values_b - values_a
    low, high = bootstrap_interval(differences, indices, confidence)
    resampled = differences[indices].mean(axis=1)
    p_value = min(1.0, 2 * min(np.mean(resampled <= 0), np.mean(resampled >= 0)))
    return {
        "difference": float(differences.mean()),
        "low": low,
        "high": high,
        "p_value": float(p_value),
    }


def unpaired_difference(
    values_a: np.ndarray,
    values_b: np.ndarray,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Mean of b minus mean of a when the rows differ: each side is resampled on its own."""
    values_a = np.asarray(values_a, dtype=np.float64)
    values_b = np.asarray(values_b, dtype=np.float64)
    means_a = values_a[bootstrap_indices(values_a.size, resamples, seed)].mean(axis=1)
    means_b = values_b[bootstrap_indices(values_b.size, resamples, seed + 1)].mean(axis=1)
    resampled = means_b - means_a
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    p_value = min(1.0, 2 * min(np.mean(resampled <= 0), np.mean(resampled >= 0)))
    return {
        "difference": float(values_b.mean() - values_a.mean()),
        "low": float(low),
        "high": float(high),
        "p_value": float(p_value),
    }


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion: sane for the small counts of one occupation."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


# -- breakdowns --------------------------------------------------------------------------------


def accuracy_by_group(
    ranks: Sequence[int | None], groups: Sequence[str], ks: Sequence[int] = (1, 5)
) -> dict[str, dict[str, float]]:
    """Per group (e.g. the gold major group): n and top-k accuracy, in sorted group order."""
    if len(ranks) != len(groups):
        raise ValueError(f"{len(ranks)} ranks for {len(groups)} groups")
    out: dict[str, dict[str, float]] = {}
    for group in sorted(set(groups)):
        members = [rank for rank, g in zip(ranks, groups, strict=True) if g == group]
        out[group] = {"n": float(len(members))}
        for k in ks:
            out[group][f"top{k}"] = accuracy_at(members, k)
    return out


def confusion_counts(
    golds: Sequence[str], predictions: Sequence[Sequence[str] | None], level: SocLevel = "major"
) -> dict[str, dict[str, int]]:
    """gold group -> {predicted top-1 group -> rows}; an abstention is counted under 'none'."""
    counts: dict[str, dict[str, int]] = {}
    for gold, predicted in zip(golds, predictions, strict=True):
        first = next((code for code in predicted or [] if code), None)
        column = soc_code(first, level) if first else "none"
        row = counts.setdefault(soc_code(gold, level), {})
        row[column] = row.get(column, 0) + 1
    return counts


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), or None when there are no values."""
    clean = [float(v) for v in values if v is not None]
    return float(np.percentile(clean, q)) if clean else None
