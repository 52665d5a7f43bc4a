"""The guard rail between evaluation and labelling: an eval records, per LLM mode, its top-1
against embedding-only in the store; `label --llm` reads it back and warns (one line) when the
model it is about to use, with the same stages, was measured to lower top-1.

The point estimate decides (a small sample rarely excludes 0); the warning gives the interval
and the data, so the reader can judge.
"""

from __future__ import annotations

from typing import Any

# Which `--llm-stages` each LLM mode of the evaluation stands for.
MODE_STAGES = {"hybrid": "rerank", "fused": "infer,rerank", "infer-hybrid": "infer,rerank"}


def eval_result_rows(metrics: dict[str, Any], report: str | None) -> list[dict[str, Any]]:
    """The rows `Store.record_eval` keeps for one evaluation: one per LLM mode that labels
    like the product does (hybrid for `rerank`, infer-hybrid for `infer,rerank`)."""
    llm = (metrics.get("settings") or {}).get("llm") or {}
    if "embedding" not in metrics["modes"] or not llm.get("model"):
        return []
    embedding_top1 = metrics["modes"]["embedding"]["levels"]["onet"]["top1"]["value"]
    rows = []
    for mode in ("hybrid", "infer-hybrid"):
        if mode not in metrics["modes"]:
            continue
        difference = next(
            (
                d
                for d in metrics["differences"]
                if (d["a"], d["b"], d["level"], d["metric"]) == ("embedding", mode, "onet", "top1")
            ),
            {},
        )
        rows.append(
            {
                "llm_model": llm["model"],
                "llm_stages": MODE_STAGES[mode],
                "mode": mode,
                "data_name": metrics["data"]["name"],
                "rows": metrics["rows"],
                "top1": metrics["modes"][mode]["levels"]["onet"]["top1"]["value"],
                "embedding_top1": embedding_top1,
                "difference_low": difference.get("low"),
                "difference_high": difference.get("high"),
                "report": report,
            }
        )
    return rows


def measured_harm(store: Any, llm_model: str, llm_stages: str) -> str | None:
    """A one-line warning when the newest stored evaluation of this model and these stages has
    top-1 below embedding-only, else None."""
    for result in store.eval_results(llm_model):
        if result["llm_stages"] != llm_stages:
            continue
        if result["top1"] >= result["embedding_top1"]:
            return None
        interval = ""
        if result["difference_low"] is not None:
            interval = (
                f", 95% CI [{result['difference_low'] * 100:+.1f}, "
                f"{result['difference_high'] * 100:+.1f}]"
            )
        return (
            f"an evaluation in this store ({result['data_name']}, {result['rows']} rows) "
            f"measured {llm_model} with --llm-stages {llm_stages} lowering top-1 from "
            f"{result['embedding_top1']:.3f} (embedding only) to {result['top1']:.3f} "
            f"({(result['top1'] - result['embedding_top1']) * 100:+.1f} points{interval}); "
            "consider labelling without --llm"
        )
    return None
