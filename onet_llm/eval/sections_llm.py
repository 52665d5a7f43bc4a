"""The report's LLM sections: calls, cost and latency; the cascade's threshold sweep."""

from __future__ import annotations

from typing import Any

from onet_llm.eval.document import Block, money, pct, seconds

LLM_FIGURES_NOTE = (
    "Tokens, cost and latency are those of the call that produced each answer "
    "(for a cache hit, as recorded when the call was first made), so a warm cache "
    "does not flatter them; 'calls made' are the requests this run actually sent. "
    "Cost comes from the price table; 'unknown' means the model has no price there "
    "(e.g. a local model), and the last column prices the same tokens at a "
    "reference model's list price for scale. A fallback keeps the embedding "
    "ranking for that row; when the LLM says no candidate fits, the product writes "
    "the embedding ranking with confidence 0 (counted in the abstain rate, scored "
    "as written)."
)


def llm_row_cells(mode: str, item: dict[str, Any]) -> tuple[str, ...]:
    """One mode's line of the LLM table."""
    return (
        mode,
        str(item["rows_sent"]),
        str(item["calls"]),
        str(item["cache_hits"]),
        f"{item['tokens_in']:,} / {item['tokens_out']:,}",
        money(item["cost_usd"]),
        money(item["cost_per_1000_postings_usd"]),
        seconds(item["latency_p50_s"]),
        seconds(item["latency_p95_s"]),
        str(item["fallbacks"]),
        str(item["none_fits"]),
        money(item.get("reference_cost_per_1000_postings_usd")),
    )


SENDING_NOTE = (
    "Sync sends one request per row and pays the list price; batch (`label --llm-mode batch`) "
    "sends the same requests through the Batch API at its rate (OpenAI: half price, answered "
    "within 24 hours); the cascade sends only the rows its rule selects, in either way. Costs "
    "are the tokens each answer's call recorded in the ledger, priced with the price table "
    "(onet_llm/rerank/cost.py, dated there); prompt tokens a server served from its prefix "
    "cache are priced at the cached rate only in the ledger, not here (none were reported)."
)


def cost_by_mode_blocks(metrics: dict[str, Any], llm_modes: list[str]) -> list[Block]:
    """Cost per 1,000 postings of each LLM mode, sent in sync and through the Batch API; at
    the reference model's prices too, so an unpriced (local) model's tokens read in dollars."""
    llm = metrics["settings"].get("llm") or {}
    reference = llm.get("reference_model", "reference")
    rows = []
    for mode in llm_modes:
        item = metrics["modes"][mode]["llm"]
        rows.append(
            (
                mode,
                str(item["rows_sent"]),
                money(item["cost_per_1000_postings_usd"]),
                money(item.get("batch_cost_per_1000_postings_usd")),
                money(item.get("reference_cost_per_1000_postings_usd")),
                money(item.get("reference_batch_cost_per_1000_postings_usd")),
            )
        )
    return [
        Block("h3", "Cost per 1,000 postings: sync, batch and cascade"),
        Block(
            "table",
            headers=(
                "mode",
                "rows sent",
                "sync",
                "batch",
                f"sync at {reference} prices",
                f"batch at {reference} prices",
            ),
            rows=tuple(rows),
        ),
        Block("p", SENDING_NOTE),
    ]


def llm_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    """Calls, cache hits, tokens, cost and latency of the LLM modes."""
    llm = metrics["settings"].get("llm") or {}
    blocks: list[Block] = []
    llm_modes = [mode for mode in modes if metrics["modes"][mode]["llm"]]
    if llm_modes:
        blocks.append(Block("h2", "LLM calls, cost and latency"))
        rows = [llm_row_cells(mode, metrics["modes"][mode]["llm"]) for mode in llm_modes]
        blocks.append(
            Block(
                "table",
                headers=(
                    "mode",
                    "rows sent",
                    "calls made",
                    "cache hits",
                    "tokens in / out",
                    "cost",
                    "cost / 1,000 postings",
                    "latency p50",
                    "latency p95",
                    "fallbacks",
                    "LLM said none fits",
                    f"same tokens at {llm.get('reference_model', 'reference')} prices / 1,000",
                ),
                rows=tuple(rows),
            )
        )
        blocks.append(Block("p", LLM_FIGURES_NOTE))
        blocks.extend(cost_by_mode_blocks(metrics, llm_modes))
        rerank_seconds = (metrics.get("seconds") or {}).get("rerank")
        if rerank_seconds is not None:
            blocks.append(
                Block(
                    "p",
                    f"Wall-clock time of the LLM stage in this run: {rerank_seconds:,.0f} s for "
                    f"{metrics['rows']} rows (cache hits take milliseconds).",
                )
            )
        for mode in llm_modes:
            errors = metrics["modes"][mode]["llm"]["errors"]
            if errors:
                blocks.append(
                    Block(
                        "p",
                        f"Most frequent LLM errors ({mode}): "
                        + "; ".join(f"{e['rows']} x `{e['error'][:160]}`" for e in errors),
                    )
                )
    return blocks


def cascade_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    """The cascade rule, its threshold and the sweep; the accuracy-vs-cost figure."""
    blocks: list[Block] = []
    cascade = metrics.get("cascade")
    if cascade:
        blocks.append(Block("h2", "Cascade: accuracy and cost across the threshold"))
        chosen = (
            "chosen on this data as the lowest-cost threshold whose top-1 is within "
            f"{cascade['tolerance'] * 100:.0f} point of the better of sending every row "
            f"(the {cascade.get('base') or 'hybrid'}) and sending none (embedding-only): report "
            "it as tuned, and re-check on fresh data"
            if cascade["threshold_chosen_on_this_data"]
            else "given with --cascade-threshold"
        )
        blocks.append(
            Block(
                "p",
                f"Rule: {cascade['rule']}. Threshold {cascade['threshold']}: {chosen}.",
            )
        )
        rows = tuple(
            (
                str(point["threshold"]),
                f"{point['sent_share']:.0%}",
                pct(point["top1"]),
                pct(point["top5"]),
                f"{point['tokens']:,}",
                money(point["cost_per_1000_postings_usd"]),
                money(point.get("batch_cost_per_1000_postings_usd")),
            )
            for point in sorted(cascade["sweep"], key=lambda p: p["sent_share"])
        )
        blocks.append(
            Block(
                "table",
                headers=(
                    "threshold",
                    "rows sent",
                    "top-1",
                    "top-5",
                    "LLM tokens",
                    "cost / 1,000",
                    "batch cost / 1,000",
                ),
                rows=rows,
            )
        )
    if "accuracy_vs_cost.png" in plots:
        blocks.append(
            Block("figure", "Top-1 accuracy against LLM cost.", image="accuracy_vs_cost.png")
        )
    return blocks
