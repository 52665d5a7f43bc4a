"""The report's opening and summary sections: data, headline, every metric, differences."""

from __future__ import annotations

from typing import Any

from onet_llm.eval.document import METRIC_NAMES, Block, money, pct, signed, with_interval
from onet_llm.eval.metrics import LEVEL_NAMES, LEVELS, METRICS


def intro_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    """Title, what data and models, how to read the intervals, and the notes."""
    data = metrics["data"]
    settings = metrics["settings"]
    blocks = [Block("h1", f"onet-llm evaluation: {', '.join(modes)} on {data['name']}")]

    sample = (
        f"a seeded random sample of **{data['rows']}** of its {data['rows_available']} rows "
        f"(seed {data['seed']})"
        if data["sample"]
        else f"all **{data['rows']}** rows"
    )
    blocks.append(
        Block(
            "p",
            f"**Data:** `{data['path']}` (sha256 `{data['sha256'][:16]}`), {sample}. "
            f"{data['description']}"
            + (
                " The occupation index was rebuilt without the evaluated titles."
                if data["index_excludes_evaluated_titles"]
                else ""
            ),
        )
    )
    llm = settings.get("llm") or {}
    model_line = (
        f"**Embedding model:** `{settings.get('embedding_model_id')}` "
        f"(asked for `{settings.get('embedding_model')}`), index `{settings.get('index_key')}`, "
        f"shortlist of {metrics['shortlist']['size']}."
    )
    if settings.get("encoder_backend", "torch") != "torch":  # reports before issue 18: torch
        model_line += f" Queries encoded with the `{settings['encoder_backend']}` backend."
    if llm:
        model_line += (
            f" **LLM:** `{llm.get('model')}` at `{llm.get('endpoint')}`, prompt "
            f"`{llm.get('prompt')}`, asked for its top {settings['options']['llm_top_k']} "
            "labels; ranks below those come from the shortlist in embedding order."
        )
    blocks.append(Block("p", model_line))
    blocks.append(
        Block(
            "p",
            f"Every mode is scored on the same {metrics['rows']} rows. Intervals are 95% "
            f"percentile bootstrap intervals ({metrics['bootstrap']['resamples']} resamples of "
            f"rows, seed {metrics['bootstrap']['seed']}); differences between modes are paired "
            "(each resample scores every mode on the same rows). Generated "
            f"{metrics['created_at']} by onet-llm {metrics['onet_llm_version']}"
            + (f" at commit `{metrics['git_commit']}`" if metrics.get("git_commit") else "")
            + ".",
        )
    )
    if notes:
        blocks.append(Block("p", notes))
    return blocks


def headline_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    """Top-1, top-5 and MRR@10 per mode, with the shortlist ceiling."""
    blocks: list[Block] = []
    blocks.append(Block("h2", "Headline (8-digit O*NET)"))
    headline_rows = []
    for mode in modes:
        result = metrics["modes"][mode]
        onet = result["levels"]["onet"]
        llm_result = result["llm"] or {}
        headline_rows.append(
            (
                mode,
                with_interval(onet["top1"]),
                with_interval(onet["top5"]),
                with_interval(onet["mrr10"]),
                pct(result["abstain_rate"]),
                str(llm_result.get("rows_sent", 0)),
                money(llm_result.get("cost_per_1000_postings_usd", 0.0) if llm_result else 0.0),
            )
        )
    blocks.append(
        Block(
            "table",
            headers=(
                "mode",
                "top-1 [95% CI]",
                "top-5 [95% CI]",
                "MRR@10 [95% CI]",
                "abstain rate",
                "rows sent to LLM",
                "cost / 1,000 postings",
            ),
            rows=tuple(headline_rows),
        )
    )
    recall = metrics["shortlist"]["recall"]
    blocks.append(
        Block(
            "p",
            f"Shortlist recall@{metrics['shortlist']['size']} (the ceiling of any rerank): "
            + "; ".join(f"{LEVEL_NAMES[level]} {with_interval(recall[level])}" for level in LEVELS)
            + ".",
        )
    )
    blocks.append(
        Block(
            "figure",
            "Accuracy at k by level, with the shortlist ceiling.",
            image="accuracy_by_k.png",
        )
    )
    return blocks


def ranking_metrics_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    """Every ranking metric at every level."""
    blocks: list[Block] = []
    blocks.append(Block("h2", "All ranking metrics by level"))
    rows = []
    for mode in modes:
        for metric in METRICS:
            rows.append(
                (mode, METRIC_NAMES[metric])
                + tuple(
                    with_interval(metrics["modes"][mode]["levels"][level][metric])
                    for level in LEVELS
                )
            )
    blocks.append(
        Block(
            "table",
            headers=("mode", "metric") + tuple(LEVEL_NAMES[level] for level in LEVELS),
            rows=tuple(rows),
        )
    )
    return blocks


def differences_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    """Paired differences between modes (top-1, top-5, MRR@10)."""
    blocks: list[Block] = []
    if metrics["differences"]:
        blocks.append(Block("h2", "Differences between modes (paired bootstrap)"))
        blocks.append(
            Block(
                "p",
                "B minus A on the same rows; an interval that excludes 0 is a difference the "
                "sample supports. p is the two-sided bootstrap p-value.",
            )
        )
        rows = []
        for diff in metrics["differences"]:
            if diff["metric"] in ("top1", "top5", "mrr10"):
                rows.append(
                    (
                        f"{diff['b']} - {diff['a']}",
                        LEVEL_NAMES[diff["level"]],
                        METRIC_NAMES[diff["metric"]],
                        signed(diff["difference"]),
                        f"[{signed(diff['low'])}, {signed(diff['high'])}]",
                        f"{diff['p_value']:.3f}",
                    )
                )
        blocks.append(
            Block(
                "table",
                headers=("B - A", "level", "metric", "difference", "95% CI", "p"),
                rows=tuple(rows),
            )
        )
    return blocks


def files_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    """What else the report folder holds."""
    blocks: list[Block] = []
    blocks.append(Block("h2", "Files"))
    blocks.append(
        Block(
            "p",
            "`metrics.json` holds every figure above; `predictions.jsonl` holds each row's "
            "predictions, sources, LLM call keys and gold ranks (compare two runs with "
            "`onet-llm eval --compare RUN_A RUN_B`); `plots/` holds the figures.",
        )
    )
    return blocks
    return blocks
