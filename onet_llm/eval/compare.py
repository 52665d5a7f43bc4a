"""Comparing two saved evaluation runs (`onet-llm eval --compare RUN_A RUN_B`): B minus A for
every metric of every mode both have, paired when they scored the same rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onet_llm.errors import InputError
from onet_llm.eval.metrics import (
    LEVELS,
    METRICS,
    bootstrap_indices,
    metric_values,
    paired_difference,
    unpaired_difference,
)


@dataclass(frozen=True)
class SavedRun:
    folder: Path
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]


def load_saved_run(path: Path) -> SavedRun:
    """A report folder written by `onet-llm eval` (or its metrics.json)."""
    folder = path.parent if path.name == "metrics.json" else path
    metrics_path = folder / "metrics.json"
    rows_path = folder / "predictions.jsonl"
    if not metrics_path.is_file():
        raise InputError(f"{path}: not an eval report (no metrics.json there)")
    if not rows_path.is_file():
        raise InputError(f"{path}: the report has no predictions.jsonl to compare row by row")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        rows = [
            json.loads(line)
            for line in rows_path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: cannot read the report ({error.msg})") from None
    return SavedRun(folder, metrics, rows)


def compare_runs(
    run_a: SavedRun, run_b: SavedRun, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """B minus A for every metric of every mode both runs have, with intervals.

    Paired (one resample matrix over the shared rows) when both runs scored the same rows of
    the same data; otherwise each run is resampled on its own and the table says so."""
    same_data = run_a.metrics["data"]["sha256"] == run_b.metrics["data"]["sha256"]
    ids_a = [row["id"] for row in run_a.rows]
    ids_b = [row["id"] for row in run_b.rows]
    paired = same_data and sorted(ids_a) == sorted(ids_b)
    if paired:
        order = {row_id: i for i, row_id in enumerate(ids_a)}
        rows_b = sorted(run_b.rows, key=lambda row: order[row["id"]])
        indices = bootstrap_indices(len(ids_a), resamples, seed)
    else:
        rows_b = run_b.rows
    modes = [mode for mode in run_a.metrics["modes"] if mode in run_b.metrics["modes"]]
    lines = []
    for mode in modes:
        for level in LEVELS:
            for m in METRICS:
                values_a = _saved_values(run_a.rows, mode, level, m)
                values_b = _saved_values(rows_b, mode, level, m)
                if paired:
                    diff = paired_difference(values_a, values_b, indices)
                else:
                    diff = unpaired_difference(values_a, values_b, resamples, seed)
                a, b = float(values_a.mean()), float(values_b.mean())
                lines.append({"mode": mode, "level": level, "metric": m, "a": a, "b": b, **diff})
        lines += _llm_lines(mode, run_a, run_b)
    return {
        "a": str(run_a.folder),
        "b": str(run_b.folder),
        "paired": paired,
        "same_data": same_data,
        "rows_a": len(run_a.rows),
        "rows_b": len(run_b.rows),
        "modes": modes,
        "lines": lines,
    }


def _llm_lines(mode: str, run_a: SavedRun, run_b: SavedRun) -> list[dict[str, Any]]:
    """Cost and latency of the LLM stage, where both runs report them (no interval)."""
    lines = []
    for key in ("cost_per_1000_postings_usd", "latency_p50_s"):
        llm_a = run_a.metrics["modes"][mode].get("llm") or {}
        llm_b = run_b.metrics["modes"][mode].get("llm") or {}
        if llm_a.get(key) is not None and llm_b.get(key) is not None:
            lines.append(
                {
                    "mode": mode,
                    "level": "-",
                    "metric": key,
                    "a": llm_a[key],
                    "b": llm_b[key],
                    "difference": llm_b[key] - llm_a[key],
                    "low": None,
                    "high": None,
                    "p_value": None,
                }
            )
    return lines


def _saved_values(rows: list[dict[str, Any]], mode: str, level: str, metric: str) -> np.ndarray:
    ranks = [row["modes"][mode]["ranks"][level] for row in rows]
    return metric_values(ranks, metric)
