"""What an analyst needs to choose a review threshold and see what goes wrong: the accuracy-vs-
score (coverage) curve of the embedding top-1 score, and the misclassified postings by title.

`score_1` is the cosine similarity of a posting and its top occupation (not a probability);
the curve says, for each threshold, what share of postings score at least that much and how
often their top-1 is right, so a team can send everything below a threshold to review.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onet_llm.eval.metrics import first_hit_rank
from onet_llm.eval.modes import EvalRun
from onet_llm.taxonomy import Taxonomy

THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 .. 0.95
MISCLASSIFIED_SHOWN = 50


def coverage_curve(run: EvalRun) -> list[dict[str, Any]]:
    """Per threshold: the share of rows whose embedding top-1 score reaches it, and their
    top-1 accuracy at 8 and 6 digits."""
    golds = list(run.dataset.frame["onet_code"])
    top_scores = np.array([s[0] if s else -1.0 for s in run.shortlist_scores])
    pairs = list(zip(run.shortlists, golds, strict=True))
    hits = {
        level: np.array([first_hit_rank(codes[:1], gold, level) == 1 for codes, gold in pairs])
        for level in ("onet", "detailed")
    }
    curve = []
    for threshold in THRESHOLDS:
        kept = top_scores >= threshold
        n = int(kept.sum())
        curve.append(
            {
                "threshold": threshold,
                "rows": n,
                "coverage": n / len(golds) if golds else 0.0,
                "top1_onet": float(hits["onet"][kept].mean()) if n else None,
                "top1_detailed": float(hits["detailed"][kept].mean()) if n else None,
            }
        )
    return curve


def misclassified_rows(run: EvalRun, taxonomy: Taxonomy) -> dict[str, Any]:
    """Rows whose embedding top-1 misses the gold code (8 digits), most confident first:
    title, gold, predicted, score and where the gold code ranked in the shortlist."""
    frame = run.dataset.frame
    rows = []
    for i, (title, gold) in enumerate(zip(frame["title"], frame["onet_code"], strict=True)):
        shortlist = run.shortlists[i]
        rank = first_hit_rank(shortlist, gold, "onet")
        if rank == 1:
            continue
        predicted = shortlist[0] if shortlist else None
        rows.append(
            {
                "title": title,
                "gold": gold,
                "gold_title": _title(taxonomy, gold),
                "predicted": predicted,
                "predicted_title": _title(taxonomy, predicted) if predicted else "",
                "score": run.shortlist_scores[i][0] if shortlist else None,
                "gold_rank": rank,
            }
        )
    rows.sort(key=lambda row: -(row["score"] or 0.0))
    return {"count": len(rows), "rows": rows[:MISCLASSIFIED_SHOWN]}


def _title(taxonomy: Taxonomy, code: str) -> str:
    if code in taxonomy:
        return taxonomy.title(code)
    inside = [o.title for o in taxonomy.occupations if o.code.startswith(code)]
    return inside[0] if inside else ""


def six_digit_golds(run: EvalRun) -> int:
    """Gold codes given as 6-digit SOC (no '.NN'): scored at 6 and 2 digits only."""
    return int(sum("." not in str(code) for code in run.dataset.frame["onet_code"]))


def plot_coverage(metrics: dict[str, Any]) -> bytes:
    from onet_llm.eval.plots import _png, _pyplot

    curve = metrics["coverage"]
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    thresholds = [point["threshold"] for point in curve]
    axis.plot(thresholds, [p["coverage"] for p in curve], marker="o", label="share of postings")
    for key, name in (("top1_onet", "top-1 accuracy, 8-digit"), ("top1_detailed", "6-digit")):
        axis.plot(thresholds, [p[key] for p in curve], marker="s", label=name)
    axis.set_xlabel("embedding top-1 score at least (cosine similarity)")
    axis.set_ylabel("share")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower left")
    axis.set_title("accuracy vs score: postings above a review threshold", fontsize=9)
    figure.tight_layout()
    return _png(figure)
