"""Report sections for choosing a review threshold: the coverage curve and the misclassified
postings (see `eval.review_figures`)."""

from __future__ import annotations

from typing import Any

from onet_llm.eval.document import Block, pct


def coverage_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    curve = metrics.get("coverage")
    if not curve:
        return []
    rows = [
        [
            f"{p['threshold']:.2f}",
            pct(p["coverage"]),
            str(p["rows"]),
            pct(p["top1_onet"]) if p["top1_onet"] is not None else "-",
            pct(p["top1_detailed"]) if p["top1_detailed"] is not None else "-",
        ]
        for p in curve
    ]
    return [
        Block("h2", "Accuracy vs score (choosing a review threshold)"),
        Block(
            "p",
            "For each threshold on the embedding top-1 score (cosine similarity, not a "
            "probability): the share of postings that reach it and the top-1 accuracy among "
            "them. Postings below the threshold are the ones to send to review.",
        ),
        Block(
            "table",
            headers=("score at least", "postings", "rows", "top-1 8-digit", "top-1 6-digit"),
            rows=tuple(tuple(row) for row in rows),
        ),
        Block("figure", "Postings and top-1 accuracy by top-1 score.", image="coverage.png"),
    ]


def misclassified_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    wrong = metrics.get("misclassified")
    if not wrong:
        return []
    rows = [
        [
            row["title"],
            f"{row['gold']} {row['gold_title']}",
            f"{row['predicted']} {row['predicted_title']}" if row["predicted"] else "-",
            f"{row['score']:.3f}" if row["score"] is not None else "-",
            str(row["gold_rank"]) if row["gold_rank"] else "not in shortlist",
        ]
        for row in wrong["rows"]
    ]
    shown = len(rows)
    six = metrics.get("gold_six_digit_rows", 0)
    six_note = (
        f" {six} gold codes are 6-digit SOC codes: those rows are scored at 6 and 2 digits "
        "(at the 8-digit level any occupation inside the SOC code counts)."
        if six
        else ""
    )
    return [
        Block("h2", "Misclassified postings"),
        Block(
            "p",
            f"{wrong['count']} rows whose embedding top-1 is not the gold occupation"
            + (f"; the {shown} with the highest score" if shown < wrong["count"] else "")
            + f", the most confident mistakes (highest score) first.{six_note}",
        ),
        Block(
            "table",
            headers=("title", "gold", "predicted (top-1)", "score", "rank of gold"),
            rows=tuple(tuple(row) for row in rows),
        ),
    ]
