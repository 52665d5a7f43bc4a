"""Scoring an evaluation run: every figure of the report, as plain JSON-able data.

Every mode is scored on exactly the same rows, so differences between modes are paired: one
bootstrap resample matrix is drawn per run and reused for every mode and every metric.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import numpy as np

from onet_llm import __version__
from onet_llm.eval.metrics import (
    LEVELS,
    METRICS,
    abstain_rate,
    accuracy_at,
    bootstrap_indices,
    bootstrap_interval,
    confusion_counts,
    hit_ranks,
    is_abstention,
    metric_values,
    paired_difference,
    wilson_interval,
)
from onet_llm.eval.modes import CASCADE_TOLERANCE, LLM_MODES, EvalRun, ModeOutcome, llm_summary
from onet_llm.eval.review_figures import coverage_curve, misclassified_rows, six_digit_golds
from onet_llm.resources import SOURCE_ROOT
from onet_llm.taxonomy import SOC_MAJOR_GROUPS, SocLevel, Taxonomy, soc_code

METRICS_SCHEMA_VERSION = 1


def interval(values: np.ndarray, indices: np.ndarray, confidence: float) -> dict[str, float]:
    low, high = bootstrap_interval(values, indices, confidence)
    return {
        "value": float(np.mean(values)) if len(values) else float("nan"),
        "low": low,
        "high": high,
    }


def score_run(run: EvalRun, taxonomy: Taxonomy) -> dict[str, Any]:
    """Every figure of the report, as plain JSON-able data (metrics.json)."""
    options = run.options
    golds = list(run.dataset.frame["onet_code"])
    n_rows = len(golds)
    indices = bootstrap_indices(n_rows, options.resamples, options.seed)
    confidence = options.confidence
    modes: dict[str, Any] = {}
    per_row_values: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for mode, outcome in run.outcomes.items():
        per_row_values[mode] = {
            level: {
                m: metric_values(hit_ranks(outcome.predictions, golds, level), m) for m in METRICS
            }
            for level in LEVELS
        }
        modes[mode] = mode_scores(
            mode, outcome, golds, per_row_values[mode], indices, confidence, taxonomy
        )
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "onet_llm_version": __version__,
        "git_commit": _git_commit(),
        "data": run.dataset.provenance(),
        "settings": {**run.settings, "options": asdict(options)},
        "bootstrap": {
            "resamples": options.resamples,
            "seed": options.seed,
            "confidence": confidence,
            "method": "percentile bootstrap over rows; one resample matrix shared by every mode",
        },
        "rows": n_rows,
        "shortlist": shortlist_scores(run, golds, indices),
        "modes": modes,
        "differences": mode_differences(list(run.outcomes), per_row_values, indices, confidence),
        "cascade": cascade_summary(run),
        "coverage": coverage_curve(run),
        "misclassified": misclassified_rows(run, taxonomy),
        "gold_six_digit_rows": six_digit_golds(run),
        "seconds": run.seconds,
    }


def shortlist_scores(run: EvalRun, golds: list[str], indices: np.ndarray) -> dict[str, Any]:
    """Recall of the shortlist at every level: the ceiling of any rerank."""
    size = run.options.shortlist_size
    scores: dict[str, Any] = {
        "size": size,
        "recall": {
            level: interval(
                metric_values(hit_ranks(run.shortlists, golds, level), f"top{size}"),
                indices,
                run.options.confidence,
            )
            for level in LEVELS
        },
    }
    if run.fused_shortlists is not None:
        scores["fused"] = fused_shortlist_recall(run, golds, indices, run.options.confidence)
    return scores


def mode_scores(
    mode: str,
    outcome: ModeOutcome,
    golds: list[str],
    values: dict[str, dict[str, np.ndarray]],
    indices: np.ndarray,
    confidence: float,
    taxonomy: Taxonomy,
) -> dict[str, Any]:
    """One mode's metrics with intervals, breakdowns, confusion and LLM summary."""
    onet_ranks = hit_ranks(outcome.predictions, golds, "onet")
    return {
        "levels": {
            level: {m: interval(values[level][m], indices, confidence) for m in METRICS}
            for level in LEVELS
        },
        "abstain_rate": mode_abstain_rate(outcome),
        "sources": dict(Counter(outcome.sources)),
        "by_major_group": by_major_group(onet_ranks, golds, outcome.predictions, confidence),
        "by_occupation": by_occupation(onet_ranks, golds, outcome.predictions, taxonomy),
        "confusion_major": confusion_counts(golds, outcome.predictions, "major"),
        "llm": llm_summary(outcome.llm_rows, len(golds)) if mode in LLM_MODES else None,
        "threshold": outcome.threshold,
    }


def mode_differences(
    names: list[str],
    values: dict[str, dict[str, dict[str, np.ndarray]]],
    indices: np.ndarray,
    confidence: float,
) -> list[dict[str, Any]]:
    """B minus A for every pair of modes, level and metric, on the same resamples."""
    differences = []
    for i, mode_a in enumerate(names):
        for mode_b in names[i + 1 :]:
            for level in LEVELS:
                for m in METRICS:
                    differences.append(
                        {
                            "a": mode_a,
                            "b": mode_b,
                            "level": level,
                            "metric": m,
                            **paired_difference(
                                values[mode_a][level][m],
                                values[mode_b][level][m],
                                indices,
                                confidence,
                            ),
                        }
                    )
    return differences


def cascade_summary(run: EvalRun) -> dict[str, Any] | None:
    if not run.cascade_sweep:
        return None
    return {
        "signal": "top1_margin",
        "rule": "send a row to the LLM when score(candidate 1) - score(candidate 2) < threshold",
        "tolerance": CASCADE_TOLERANCE,
        "threshold": run.outcomes["cascade"].threshold,
        "base": run.cascade_base,
        "threshold_chosen_on_this_data": run.options.cascade_threshold is None,
        "sweep": run.cascade_sweep,
    }


def fused_shortlist_recall(
    run: EvalRun, golds: list[str], indices: np.ndarray, confidence: float
) -> dict[str, Any]:
    """Recall of the fused shortlists (infer modes) per level, and its paired difference
    with the embedding's own shortlist: what the infer stage adds, not only reorders."""
    size = run.options.shortlist_size
    out: dict[str, Any] = {"recall": {}, "difference": {}}
    for level in LEVELS:
        own = metric_values(hit_ranks(run.shortlists, golds, level), f"top{size}")
        fused = metric_values(hit_ranks(run.fused_shortlists or [], golds, level), f"top{size}")
        out["recall"][level] = interval(fused, indices, confidence)
        out["difference"][level] = paired_difference(own, fused, indices, confidence)
    lengths = [len(row) for row in run.fused_shortlists or []]
    out["mean_length"] = float(np.mean(lengths)) if lengths else 0.0
    return out


def mode_abstain_rate(outcome: ModeOutcome) -> float:
    """Rows the mode declined to label: no labels at all, or the LLM said that no shortlisted
    occupation fits (the product still writes the embedding ranking there, with confidence 0,
    and that ranking is what gets scored)."""
    declined = [row is not None and row.none_fits for row in outcome.llm_rows]
    empty = abstain_rate(outcome.predictions)
    if not any(declined):
        return empty
    return float(
        np.mean(
            [
                flag or is_abstention(predicted)
                for flag, predicted in zip(declined, outcome.predictions, strict=True)
            ]
        )
    )


def by_major_group(
    ranks: list[int | None],
    golds: list[str],
    predictions: list[list[str]],
    confidence: float,
) -> list[dict[str, Any]]:
    """Accuracy per gold major group with counts and a Wilson interval for top-1."""
    major_hits = hit_ranks(predictions, golds, "major")
    out = []
    groups = [soc_code(gold, "major") for gold in golds]
    for group in sorted(set(groups)):
        rows = [i for i, g in enumerate(groups) if g == group]
        members = [ranks[i] for i in rows]
        hits = sum(rank == 1 for rank in members)
        low, high = wilson_interval(hits, len(rows), confidence)
        out.append(
            {
                "major_group": group,
                "title": SOC_MAJOR_GROUPS.get(group, group),
                "n": len(rows),
                "top1_hits": hits,
                "top1": hits / len(rows),
                "top1_low": low,
                "top1_high": high,
                "top5": accuracy_at(members, 5),
                "major_top1": accuracy_at([major_hits[i] for i in rows], 1),
            }
        )
    return out


def by_occupation(
    ranks: list[int | None], golds: list[str], predictions: list[list[str]], taxonomy: Taxonomy
) -> list[dict[str, Any]]:
    """Accuracy per gold occupation with counts and the most frequent wrong top-1."""
    out = []
    for code in sorted(set(golds)):
        rows = [i for i, gold in enumerate(golds) if gold == code]
        members = [ranks[i] for i in rows]
        wrong = Counter(
            predictions[i][0]
            for i in rows
            if not is_abstention(predictions[i]) and predictions[i][0] != code
        )
        confused = wrong.most_common(1)[0] if wrong else None
        out.append(
            {
                "onet_code": code,
                "onet_title": taxonomy.title(code) if code in taxonomy else f"SOC {code}",
                "n": len(rows),
                "top1_hits": sum(rank == 1 for rank in members),
                "top1": accuracy_at(members, 1),
                "top5": accuracy_at(members, 5),
                "most_frequent_wrong_top1": confused[0] if confused else None,
                "most_frequent_wrong_top1_title": taxonomy.title(confused[0])
                if confused and confused[0] in taxonomy
                else None,
                "most_frequent_wrong_top1_rows": confused[1] if confused else 0,
            }
        )
    return out


def prediction_records(run: EvalRun) -> list[dict[str, Any]]:
    """One record per row (predictions.jsonl): what each mode answered and where the gold code
    ranked, so that two runs can be compared row by row later."""
    frame = run.dataset.frame
    records = []
    for i, row in enumerate(frame.itertuples(index=False)):
        record: dict[str, Any] = {
            "row_number": int(row.row_number),
            "id": row.id,
            "title": row.title,
            "onet_code": row.onet_code,
            "shortlist": run.shortlists[i],
            "top1_margin": run.margins[i],
            "modes": {},
        }
        for mode, outcome in run.outcomes.items():
            predicted = outcome.predictions[i]
            llm_row = outcome.llm_rows[i]
            entry: dict[str, Any] = {
                "predicted": predicted,
                "source": outcome.sources[i],
                "ranks": {level: _first_rank(predicted, row.onet_code, level) for level in LEVELS},
            }
            if llm_row is not None:
                entry["llm"] = {
                    key: value for key, value in asdict(llm_row).items() if key != "predicted"
                }
                entry["llm"]["picks"] = llm_row.predicted
            record["modes"][mode] = entry
        records.append(record)
    return records


def _first_rank(predicted: list[str], gold: str, level: SocLevel) -> int | None:
    return hit_ranks([predicted], [gold], level)[0]


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None
