"""The report's guard-rail section: every mode against embedding-only on the same rows.

What issue 14 asks the evaluation to show: per mode, top-1 / top-5 and the recall@N of the
shortlist the mode ranks from (the fused one for `fused` and `infer-hybrid`), each with its
paired difference against embedding-only, and the LLM calls and tokens per 1,000 postings.
"""

from __future__ import annotations

from typing import Any

from onet_llm.eval.document import Block, pct, signed, with_interval

FUSED_MODES = ("fused", "infer-hybrid")


def _difference(diff: dict[str, Any]) -> str:
    return f"{signed(diff['difference'])} [{signed(diff['low'])}, {signed(diff['high'])}]"


def _versus(metrics: dict[str, Any], mode: str, metric: str) -> str:
    for diff in metrics["differences"]:
        wanted = (diff["a"], diff["b"], diff["level"], diff["metric"])
        if wanted == ("embedding", mode, "onet", metric):
            return _difference(diff)
    return ""


def _recall(metrics: dict[str, Any], mode: str) -> tuple[str, str]:
    shortlist = metrics["shortlist"]
    fused = shortlist.get("fused")
    if mode in FUSED_MODES and fused:
        return with_interval(fused["recall"]["onet"]), _difference(fused["difference"]["onet"])
    return with_interval(shortlist["recall"]["onet"]), ""


def _mode_row(metrics: dict[str, Any], mode: str) -> tuple[str, ...]:
    onet = metrics["modes"][mode]["levels"]["onet"]
    llm = metrics["modes"][mode]["llm"] or {}
    recall, recall_diff = _recall(metrics, mode)
    calls = llm.get("calls_per_1000_postings")
    tokens = llm.get("tokens_per_1000_postings")
    return (
        mode,
        with_interval(onet["top1"]),
        _versus(metrics, mode, "top1"),
        pct(onet["top5"]["value"]),
        _versus(metrics, mode, "top5"),
        recall,
        recall_diff,
        f"{calls:,.0f}" if calls is not None else "0",
        f"{tokens:,.0f}" if tokens is not None else "0",
    )


def versus_embedding_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    if "embedding" not in modes or len(modes) < 2:
        return []
    size = metrics["shortlist"]["size"]
    rows = [_mode_row(metrics, mode) for mode in modes]
    blocks = [
        Block("h2", "Against embedding-only (paired, 8-digit O*NET)"),
        Block(
            "table",
            headers=(
                "mode",
                "top-1 [95% CI]",
                "top-1 - embedding [95% CI]",
                "top-5",
                "top-5 - embedding [95% CI]",
                f"shortlist recall@{size}",
                f"recall@{size} - embedding's own [95% CI]",
                "LLM calls / 1,000 postings",
                "LLM tokens / 1,000 postings",
            ),
            rows=tuple(rows),
        ),
        Block(
            "p",
            "Recall is that of the shortlist the mode ranks from: the posting's own for "
            "embedding, hybrid and cascade; the fusion of the posting's own shortlist with the "
            "shortlists of the LLM's inferred titles for fused and infer-hybrid. Calls and "
            "tokens count every call behind the answers (infer and rerank), cache hits as "
            "first made.",
        ),
    ]
    fused = metrics["shortlist"].get("fused")
    infer = (metrics["settings"].get("llm") or {}).get("infer")
    if fused and infer:
        blocks.append(
            Block(
                "p",
                f"Infer stage: prompt {infer['prompt']}, {infer['examples']} taxonomy examples "
                f"per posting, fusion `{infer['fusion']}`; fused shortlists are "
                f"{fused['mean_length']:.1f} codes long on average.",
            )
        )
    return blocks
