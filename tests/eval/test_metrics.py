"""Metric functions against cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from onet_llm.eval.metrics import (
    abstain_rate,
    accuracy_at,
    accuracy_by_group,
    bootstrap_indices,
    bootstrap_interval,
    confusion_counts,
    first_hit_rank,
    hit_ranks,
    hits_at,
    mean_reciprocal_rank,
    metric_values,
    paired_difference,
    percentile,
    ranking_summary,
    reciprocal_ranks,
    shortlist_recall,
    unpaired_difference,
    wilson_interval,
)

NURSE = "29-1141.00"
SOFTWARE = "15-1252.00"
QA = "15-1253.00"
CEO = "11-1011.00"


def test_rank_is_the_list_position_of_the_first_match():
    assert first_hit_rank([CEO, SOFTWARE, NURSE], SOFTWARE) == 2
    assert first_hit_rank([CEO, NURSE], SOFTWARE) is None


def test_ties_keep_the_order_the_product_showed():
    # Two candidates with the same score: the gold one was shown second, so it ranks second.
    shown = [(QA, 0.71), (SOFTWARE, 0.71)]
    assert first_hit_rank([code for code, _ in shown], SOFTWARE) == 2


def test_missing_predictions_are_misses_everywhere():
    ranks = hit_ranks([None, [], ["", SOFTWARE]], [SOFTWARE] * 3)
    assert ranks == [None, None, 2]  # an empty entry still takes up its position
    assert accuracy_at(ranks, 1) == 0.0
    assert accuracy_at(ranks, 2) == pytest.approx(1 / 3)
    assert mean_reciprocal_rank(ranks) == pytest.approx(0.5 / 3)
    assert abstain_rate([None, [], [""], [SOFTWARE]]) == 0.75


def test_predictions_given_at_other_levels_match_only_where_they_carry_the_code():
    gold = SOFTWARE
    assert [
        first_hit_rank(["15-1252"], gold, level) for level in ("onet", "detailed", "major")
    ] == [
        None,
        1,
        1,
    ]
    # Another O*NET occupation inside the same SOC detailed occupation.
    assert first_hit_rank(["15-1252.01"], gold, "onet") is None
    assert first_hit_rank(["15-1252.01"], gold, "detailed") == 1
    # A major group alone.
    assert first_hit_rank(["15"], gold, "major") == 1
    assert first_hit_rank(["15"], gold, "detailed") is None
    # At a coarser level the first prediction in the right group counts.
    assert first_hit_rank([NURSE, QA, SOFTWARE], gold, "major") == 2
    assert first_hit_rank([NURSE, QA, SOFTWARE], gold, "onet") == 3


def test_duplicated_predictions_take_up_places():
    assert first_hit_rank([CEO, CEO, SOFTWARE], SOFTWARE) == 3
    assert first_hit_rank([QA, QA], SOFTWARE, "major") == 1
    assert first_hit_rank([QA, QA], SOFTWARE, "onet") is None


def test_top_k_and_mrr_by_hand():
    ranks = [1, 2, None, 4]
    assert accuracy_at(ranks, 1) == 0.25
    assert accuracy_at(ranks, 3) == 0.5
    assert accuracy_at(ranks, 10) == 0.75
    assert mean_reciprocal_rank(ranks, 10) == pytest.approx((1 + 0.5 + 0 + 0.25) / 4)
    assert mean_reciprocal_rank(ranks, 3) == pytest.approx((1 + 0.5) / 4)
    assert hits_at(ranks, 2).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert reciprocal_ranks(ranks, 10).tolist() == [1.0, 0.5, 0.0, 0.25]
    assert metric_values(ranks, "top3").mean() == accuracy_at(ranks, 3)
    assert metric_values(ranks, "mrr10").mean() == mean_reciprocal_rank(ranks, 10)
    with pytest.raises(ValueError):
        metric_values(ranks, "ndcg10")
    summary = ranking_summary([[SOFTWARE], [CEO, SOFTWARE]], [SOFTWARE, SOFTWARE], ks=(1, 2))
    assert summary == {"top1": 0.5, "top2": 1.0, "mrr10": 0.75, "n": 2.0}


def test_shortlist_recall_counts_the_gold_code_anywhere_on_the_list():
    shortlists = [[CEO, NURSE, SOFTWARE], [CEO, NURSE], [QA]]
    golds = [SOFTWARE, SOFTWARE, SOFTWARE]
    assert shortlist_recall(shortlists, golds) == pytest.approx(1 / 3)
    assert shortlist_recall(shortlists, golds, "major") == pytest.approx(2 / 3)


def test_bootstrap_interval_and_paired_difference_by_hand():
    a = np.array([1.0, 0.0, 0.0, 0.0])
    b = np.array([1.0, 1.0, 1.0, 0.0])
    # Four hand-picked resamples: row differences b - a are [0, 1, 1, 0].
    indices = np.array([[0, 1, 2, 3], [1, 1, 1, 1], [3, 3, 3, 3], [0, 0, 2, 2]])
    # Resampled mean differences: 0.5, 1, 0, 0.5 -> sorted [0, 0.5, 0.5, 1].
    result = paired_difference(a, b, indices)
    assert result["difference"] == 0.5
    assert result["low"] == pytest.approx(0.0375)  # 2.5th percentile, linear interpolation
    assert result["high"] == pytest.approx(0.9625)
    assert result["p_value"] == 0.5  # one of four resamples at or below zero, two-sided
    assert bootstrap_interval(np.ones(5), bootstrap_indices(5, 200, 1)) == (1.0, 1.0)
    same = paired_difference(a, a, bootstrap_indices(4, 200, 1))
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}
    with pytest.raises(ValueError):
        paired_difference(a, b[:3], indices)


def test_bootstrap_is_seeded_and_covers_the_mean():
    values = np.array([1.0] * 30 + [0.0] * 70)
    first = bootstrap_interval(values, bootstrap_indices(100, 2000, 7))
    again = bootstrap_interval(values, bootstrap_indices(100, 2000, 7))
    assert first == again
    low, high = first
    assert low < 0.3 < high
    # The normal approximation gives 0.3 +- 0.09; the bootstrap should be close to it.
    assert low == pytest.approx(0.21, abs=0.03) and high == pytest.approx(0.39, abs=0.03)
    unpaired = unpaired_difference(values, 1 - values, resamples=500, seed=3)
    assert unpaired["difference"] == pytest.approx(0.4)
    assert unpaired["low"] < 0.4 < unpaired["high"]


def test_wilson_interval_matches_the_textbook_values():
    assert wilson_interval(0, 5) == pytest.approx((0.0, 0.4345), abs=1e-4)
    assert wilson_interval(5, 5) == pytest.approx((0.5655, 1.0), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert all(np.isnan(value) for value in wilson_interval(0, 0))


def test_breakdowns_by_group_and_confusion():
    golds = [SOFTWARE, SOFTWARE, NURSE]
    predictions = [[QA], [NURSE, SOFTWARE], None]
    ranks = hit_ranks(predictions, golds)
    assert accuracy_by_group(ranks, ["15", "15", "29"], ks=(1, 2)) == {
        "15": {"n": 2.0, "top1": 0.0, "top2": 0.5},
        "29": {"n": 1.0, "top1": 0.0, "top2": 0.0},
    }
    assert confusion_counts(golds, predictions) == {"15": {"15": 1, "29": 1}, "29": {"none": 1}}


def test_percentile_ignores_missing_values():
    assert percentile([1.0, 2.0, 3.0, 4.0, None], 50) == 2.5
    assert percentile([], 95) is None
