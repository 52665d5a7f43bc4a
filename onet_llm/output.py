"""The layout of a `label` output: which columns, in which order, and what they mean.

One row per input row: the posting's id and title, the input columns the user asked to keep,
then per rank k = 1..K the O*NET-SOC code (`onet_code_k`, 8 digits as in O*NET 30.1), its
title, its `score` (cosine similarity of posting and occupation: higher is closer, not a
probability) and its 6-digit SOC 2018 code (`soc_code_k`); the major group of the top label
(`major_group_1`, e.g. 15-0000, and its name); any LLM fields (rationale, confidence); and where
the labels came from (`source`) with an `error` when there was one. JSONL keeps the labels
nested, each with its `soc_code`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from onet_llm.taxonomy import SOC_MAJOR_GROUPS, soc_code

LABEL_FIELDS = ("onet_code", "onet_title", "score")


def major_group_code(onet_code: str) -> str:
    """'15-1252.00' -> '15-0000', the SOC 2018 way to write a major group."""
    return f"{soc_code(onet_code, 'major')}-0000"


def kept_column_name(name: str, reserved: set[str]) -> str:
    """An input column keeps its name unless an output column already has it."""
    return f"input_{name}" if name in reserved else name


def output_records(
    rows: pd.DataFrame,
    labels: list[list[dict]],
    kept: list[dict[str, str]],
    top_k: int,
    file_format: str,
) -> pd.DataFrame | list[dict]:
    """Store rows (labels and kept input columns parsed) -> the output layout: wide columns
    for CSV/TSV/Parquet/Excel, nested labels for JSONL."""
    if file_format == "jsonl":
        return _jsonl_records(rows, labels, kept)
    wide: dict[str, list] = {"id": rows["posting_id"].tolist(), "title": rows["title"].tolist()}
    reserved = set(wide) | {"source", "error", "major_group_1", "major_group_title_1"}
    for name in dict.fromkeys(key for row in kept for key in row):
        wide[kept_column_name(name, reserved)] = [row.get(name, "") for row in kept]
    for field in LABEL_FIELDS:
        for k in range(top_k):
            wide[f"{field}_{k + 1}"] = [_field(row, k, field) for row in labels]
    for k in range(top_k):
        wide[f"soc_code_{k + 1}"] = [
            soc_code(code, "detailed") if code else None
            for code in (_field(row, k, "onet_code") for row in labels)
        ]
    top = [_field(row, 0, "onet_code") for row in labels]
    wide["major_group_1"] = [major_group_code(code) if code else None for code in top]
    wide["major_group_title_1"] = [
        SOC_MAJOR_GROUPS.get(soc_code(code, "major")) if code else None for code in top
    ]
    extra_fields = sorted(
        {key for row_labels in labels for label in row_labels for key in label} - set(LABEL_FIELDS)
    )
    for field in extra_fields:
        for k in range(top_k):
            wide[f"{field}_{k + 1}"] = [_field(row, k, field) for row in labels]
    wide["source"] = rows["source"].tolist()
    wide["error"] = [error if isinstance(error, str) else "" for error in rows["error"]]
    frame = pd.DataFrame(wide)
    for k in range(top_k):
        frame[f"score_{k + 1}"] = frame[f"score_{k + 1}"].astype("float64")
    return frame


def _field(row_labels: list[dict], k: int, field: str) -> Any:
    return row_labels[k].get(field) if k < len(row_labels) else None


def _jsonl_records(
    rows: pd.DataFrame, labels: list[list[dict]], kept: list[dict[str, str]]
) -> list[dict]:
    records = []
    for posting_id, title, row_labels, row_kept, source, error in zip(
        rows["posting_id"], rows["title"], labels, kept, rows["source"], rows["error"], strict=True
    ):
        record: dict[str, Any] = {"id": posting_id, "title": title}
        reserved = {"id", "title", "labels", "major_group", "source", "error"}
        record.update({kept_column_name(k, reserved): v for k, v in row_kept.items()})
        record["labels"] = [
            {**label, "soc_code": soc_code(label["onet_code"], "detailed")} for label in row_labels
        ]
        record["major_group"] = major_group_code(row_labels[0]["onet_code"]) if row_labels else None
        record["source"] = source
        record["error"] = error if isinstance(error, str) and error else None
        records.append(record)
    return records
