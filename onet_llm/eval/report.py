"""Turn an evaluation's metrics into report.md, a self-contained report.html and plots.

Both documents are rendered from one list of blocks (headings, paragraphs, tables, figures), so
the Markdown and the HTML always say the same thing. Plots are matplotlib PNGs: written next to
report.md (which links them) and embedded as base64 in report.html (which needs nothing else,
so it opens offline and can be mailed around).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onet_llm.eval.metrics import KS, LEVEL_NAMES, LEVELS, METRICS
from onet_llm.taxonomy import SOC_MAJOR_GROUPS

MODE_COLOURS = {"embedding": "#4C72B0", "hybrid": "#DD8452", "cascade": "#55A868"}
# Distinct markers and dashes keep modes visible where their lines coincide.
MODE_STYLES = {
    "embedding": {"marker": "o", "linestyle": "-"},
    "hybrid": {"marker": "s", "linestyle": "--"},
    "cascade": {"marker": "^", "linestyle": ":"},
}
METRIC_NAMES = {
    "top1": "top-1",
    "top3": "top-3",
    "top5": "top-5",
    "top10": "top-10",
    "mrr10": "MRR@10",
}


@dataclass(frozen=True)
class Block:
    kind: str  # h1 | h2 | h3 | p | table | figure | details
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    image: str = ""  # figure file name under plots/


# -- formatting --------------------------------------------------------------------------------


def pct(value: float | None) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"
    )


def with_interval(entry: dict[str, float]) -> str:
    return f"{pct(entry['value'])} [{pct(entry['low'])}, {pct(entry['high'])}]"


def signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def money(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


# -- plots -------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def plot_accuracy_by_k(metrics: dict[str, Any]) -> bytes:
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(LEVELS), figsize=(12, 3.8), sharey=True)
    for axis, level in zip(axes, LEVELS, strict=True):
        for mode, result in metrics["modes"].items():
            entries = [result["levels"][level][f"top{k}"] for k in KS]
            values = [entry["value"] for entry in entries]
            axis.plot(
                KS,
                values,
                label=mode,
                color=MODE_COLOURS.get(mode),
                markersize=6,
                **MODE_STYLES.get(mode, {"marker": "o"}),
            )
            axis.fill_between(
                KS,
                [entry["low"] for entry in entries],
                [entry["high"] for entry in entries],
                alpha=0.15,
                color=MODE_COLOURS.get(mode),
            )
        recall = metrics["shortlist"]["recall"][level]["value"]
        axis.axhline(recall, linestyle="--", color="grey", linewidth=1)
        axis.annotate(
            f"shortlist recall@{metrics['shortlist']['size']}",
            (KS[0], recall),
            textcoords="offset points",
            xytext=(0, 4),
            fontsize=8,
            color="grey",
        )
        axis.set_title(LEVEL_NAMES[level])
        axis.set_xticks(KS)
        axis.set_xlabel("k")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy at k (95% CI shaded)")
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(loc="lower right")
    return _png(figure)


def plot_by_major_group(metrics: dict[str, Any]) -> bytes:
    plt = _pyplot()
    modes = list(metrics["modes"])
    groups = [entry["major_group"] for entry in metrics["modes"][modes[0]]["by_major_group"]]
    counts = {
        entry["major_group"]: entry["n"] for entry in metrics["modes"][modes[0]]["by_major_group"]
    }
    height = 0.8 / len(modes)
    figure, axis = plt.subplots(figsize=(10, 0.45 * len(groups) + 1.2))
    positions = np.arange(len(groups))
    for offset, mode in enumerate(modes):
        by_group = {
            entry["major_group"]: entry for entry in metrics["modes"][mode]["by_major_group"]
        }
        values = [by_group[group]["top1"] for group in groups]
        axis.barh(
            positions + offset * height,
            values,
            height=height,
            label=mode,
            color=MODE_COLOURS.get(mode),
        )
    axis.set_yticks(positions + height * (len(modes) - 1) / 2)
    axis.set_yticklabels(
        [f"{group} {SOC_MAJOR_GROUPS.get(group, '')[:34]} (n={counts[group]})" for group in groups],
        fontsize=8,
    )
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("top-1 accuracy, 8-digit O*NET, by the gold code's major group")
    axis.grid(axis="x", alpha=0.3)
    axis.legend(loc="lower right")
    return _png(figure)


def cost_axis(metrics: dict[str, Any]) -> tuple[str, str]:
    """Dollars when the price is known and non-zero, else LLM tokens (the cost driver)."""
    costs = [
        point["cost_per_1000_postings_usd"] for point in (metrics["cascade"] or {}).get("sweep", [])
    ]
    costs += [
        (result["llm"] or {}).get("cost_per_1000_postings_usd")
        for result in metrics["modes"].values()
        if result["llm"]
    ]
    if costs and all(cost is not None for cost in costs) and max(costs) > 0:
        return "cost_per_1000_postings_usd", "LLM cost per 1,000 postings (USD)"
    return "tokens_per_posting", "LLM tokens per posting (price unknown or zero)"


def plot_accuracy_vs_cost(metrics: dict[str, Any]) -> bytes:
    plt = _pyplot()
    key, label = cost_axis(metrics)
    rows = metrics["rows"]
    figure, axis = plt.subplots(figsize=(8, 4.5))

    def x_of(cost: float | None, tokens: int) -> float:
        return (cost or 0.0) if key == "cost_per_1000_postings_usd" else tokens / rows

    cascade = metrics.get("cascade")
    if cascade:
        points = sorted(cascade["sweep"], key=lambda point: point["sent_share"])
        xs = [x_of(p["cost_per_1000_postings_usd"], p["tokens"]) for p in points]
        axis.plot(
            xs,
            [p["top1"] for p in points],
            marker=".",
            color=MODE_COLOURS["cascade"],
            label="cascade (threshold sweep)",
        )
        for point, x in zip(points, xs, strict=True):
            axis.annotate(
                f"{point['sent_share']:.0%}",
                (x, point["top1"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, -9),
            )
    for mode, result in metrics["modes"].items():
        llm = result["llm"] or {"cost_per_1000_postings_usd": 0.0, "tokens_in": 0, "tokens_out": 0}
        x = x_of(llm["cost_per_1000_postings_usd"], llm["tokens_in"] + llm["tokens_out"])
        entry = result["levels"]["onet"]["top1"]
        axis.errorbar(
            [x],
            [entry["value"]],
            yerr=[[entry["value"] - entry["low"]], [entry["high"] - entry["value"]]],
            fmt="o" if mode != "cascade" else "*",
            markersize=9 if mode != "cascade" else 14,
            color=MODE_COLOURS.get(mode),
            label=f"{mode} (95% CI)",
            capsize=4,
        )
    axis.set_xlabel(label + "; labels on the sweep = share of rows sent to the LLM")
    axis.set_ylabel("top-1 accuracy, 8-digit O*NET")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    return _png(figure)


def plot_confusion(metrics: dict[str, Any], mode: str) -> bytes:
    plt = _pyplot()
    confusion = metrics["modes"][mode]["confusion_major"]
    gold_groups = sorted(confusion)
    predicted = sorted({column for row in confusion.values() for column in row} | set(gold_groups))
    predicted = [g for g in predicted if g != "none"] + (
        ["none"] if any("none" in r for r in confusion.values()) else []
    )
    matrix = np.array(
        [[confusion[gold].get(column, 0) for column in predicted] for gold in gold_groups],
        dtype=float,
    )
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(
        figsize=(0.42 * len(predicted) + 2.5, 0.38 * len(gold_groups) + 1.8)
    )
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(len(gold_groups)):
        for j in range(len(predicted)):
            if matrix[i, j]:
                axis.text(
                    j,
                    i,
                    int(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shares[i, j] > 0.6 else "black",
                )
    axis.set_xticks(range(len(predicted)))
    axis.set_xticklabels(predicted, fontsize=8)
    axis.set_yticks(range(len(gold_groups)))
    axis.set_yticklabels(
        [f"{g} {SOC_MAJOR_GROUPS.get(g, '')[:22]}" for g in gold_groups], fontsize=8
    )
    axis.set_xlabel("predicted top-1 major group")
    axis.set_ylabel("gold major group")
    axis.set_title(f"{mode}: rows by gold vs predicted major group (shade = row share)", fontsize=9)
    return _png(figure)


def build_plots(metrics: dict[str, Any]) -> dict[str, bytes]:
    plots = {
        "accuracy_by_k.png": plot_accuracy_by_k(metrics),
        "by_major_group.png": plot_by_major_group(metrics),
    }
    if any(result["llm"] for result in metrics["modes"].values()):
        plots["accuracy_vs_cost.png"] = plot_accuracy_vs_cost(metrics)
    for mode in metrics["modes"]:
        plots[f"confusion_major_{mode}.png"] = plot_confusion(metrics, mode)
    return plots


# -- the document ------------------------------------------------------------------------------


def report_blocks(metrics: dict[str, Any], plots: dict[str, bytes], notes: str = "") -> list[Block]:
    data = metrics["data"]
    settings = metrics["settings"]
    modes = list(metrics["modes"])
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

    llm_modes = [mode for mode in modes if metrics["modes"][mode]["llm"]]
    if llm_modes:
        blocks.append(Block("h2", "LLM calls, cost and latency"))
        rows = []
        for mode in llm_modes:
            item = metrics["modes"][mode]["llm"]
            rows.append(
                (
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
            )
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
        blocks.append(
            Block(
                "p",
                "Tokens, cost and latency are those of the call that produced each answer "
                "(for a cache hit, as recorded when the call was first made), so a warm cache "
                "does not flatter them; 'calls made' are the requests this run actually sent. "
                "Cost comes from the price table; 'unknown' means the model has no price there "
                "(e.g. a local model), and the last column prices the same tokens at a "
                "reference model's list price for scale. A fallback keeps the embedding "
                "ranking for that row; when the LLM says no candidate fits, the product writes "
                "the embedding ranking with confidence 0 (counted in the abstain rate, scored "
                "as written).",
            )
        )
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

    cascade = metrics.get("cascade")
    if cascade:
        blocks.append(Block("h2", "Cascade: accuracy and cost across the threshold"))
        chosen = (
            "chosen on this data as the lowest-cost threshold whose top-1 is within "
            f"{cascade['tolerance'] * 100:.0f} point of sending every row (the hybrid): report "
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
            )
            for point in sorted(cascade["sweep"], key=lambda p: p["sent_share"])
        )
        blocks.append(
            Block(
                "table",
                headers=("threshold", "rows sent", "top-1", "top-5", "LLM tokens", "cost / 1,000"),
                rows=rows,
            )
        )
    if "accuracy_vs_cost.png" in plots:
        blocks.append(
            Block("figure", "Top-1 accuracy against LLM cost.", image="accuracy_vs_cost.png")
        )

    blocks.append(Block("h2", "By major group (gold code's SOC major group)"))
    first = metrics["modes"][modes[0]]["by_major_group"]
    by_mode = {
        mode: {e["major_group"]: e for e in metrics["modes"][mode]["by_major_group"]}
        for mode in modes
    }
    rows = []
    for entry in first:
        group = entry["major_group"]
        cells = [f"{group} {entry['title']}", str(entry["n"])]
        for mode in modes:
            item = by_mode[mode][group]
            cells.append(
                f"{pct(item['top1'])} [{pct(item['top1_low'])}, {pct(item['top1_high'])}] / "
                f"{pct(item['top5'])} / {pct(item['major_top1'])}"
            )
        rows.append(tuple(cells))
    blocks.append(
        Block(
            "p",
            "Per mode: 8-digit top-1 [Wilson 95% CI] / 8-digit top-5 / major-group top-1.",
        )
    )
    blocks.append(Block("table", headers=("major group", "rows") + tuple(modes), rows=tuple(rows)))
    blocks.append(Block("figure", "Top-1 accuracy by major group.", image="by_major_group.png"))

    blocks.append(Block("h2", "Confusion between major groups"))
    for mode in modes:
        confusion = metrics["modes"][mode]["confusion_major"]
        off = sorted(
            (
                (count, gold, predicted)
                for gold, row in confusion.items()
                for predicted, count in row.items()
                if predicted != gold
            ),
            reverse=True,
        )[:8]
        if off:
            blocks.append(
                Block(
                    "p",
                    f"{mode}, most frequent cross-group top-1 errors (gold -> predicted): "
                    + "; ".join(
                        f"{gold} {SOC_MAJOR_GROUPS.get(gold, '')} -> {predicted} "
                        f"{SOC_MAJOR_GROUPS.get(predicted, '')}: {count}"
                        for count, gold, predicted in off
                    ),
                )
            )
        blocks.append(
            Block(
                "figure",
                f"{mode}: gold vs predicted major group.",
                image=f"confusion_major_{mode}.png",
            )
        )

    blocks.append(Block("h2", "By occupation"))
    blocks.append(
        Block(
            "p",
            "Per mode: top-1 hits / rows, and the most frequent wrong top-1 label. "
            "Counts are small: read these as leads for error analysis, not as estimates.",
        )
    )
    occupations = {
        mode: {e["onet_code"]: e for e in metrics["modes"][mode]["by_occupation"]} for mode in modes
    }
    rows = []
    for entry in metrics["modes"][modes[0]]["by_occupation"]:
        code = entry["onet_code"]
        cells = [code, entry["onet_title"], str(entry["n"])]
        for mode in modes:
            item = occupations[mode][code]
            wrong = ""
            if item["most_frequent_wrong_top1"]:
                wrong_title = item["most_frequent_wrong_top1_title"] or ""
                wrong = (
                    f" (else {item['most_frequent_wrong_top1']} {wrong_title},"
                    f" {item['most_frequent_wrong_top1_rows']}x)"
                )
            cells.append(f"{item['top1_hits']}/{item['n']}{wrong}")
        rows.append(tuple(cells))
    blocks.append(
        Block(
            "table", headers=("O*NET code", "occupation", "rows") + tuple(modes), rows=tuple(rows)
        )
    )

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


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(payload: Any) -> str:
    """JSON with infinities as strings (JSON has none) and numpy scalars as numbers."""
    return json.dumps(jsonable(payload), indent=1, default=_json_default, ensure_ascii=False)


def jsonable(value: Any) -> Any:
    """Plain JSON values: infinities as 'inf' strings, NaN as null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


# -- rendering ---------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if block.kind in {"h1", "h2", "h3"}:
            lines += ["#" * int(block.kind[1]) + " " + block.text, ""]
        elif block.kind == "p":
            lines += [block.text, ""]
        elif block.kind == "table":
            lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            lines.append("|" + "---|" * len(block.headers))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        elif block.kind == "figure":
            lines += [f"![{block.text}](plots/{block.image})", ""]
    return "\n".join(lines)


def _inline_markdown(text: str) -> str:
    """The two inline marks the blocks use (`code` and **bold**), escaped for HTML."""
    parts = html.escape(text).split("`")
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{part}</code>")
        else:
            bold = part.split("**")
            out.append("".join(f"<strong>{b}</strong>" if j % 2 else b for j, b in enumerate(bold)))
    return "".join(out)


HTML_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em auto;
       max-width: 1180px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } tr:nth-child(even) td { background: #fafafa; }
code { background: #f2f2f2; padding: 0 3px; border-radius: 3px; font-size: 12px; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12px; }
"""


def render_html(blocks: list[Block], plots: dict[str, bytes], title: str) -> str:
    body = []
    for block in blocks:
        if block.kind in {"h1", "h2", "h3"}:
            body.append(f"<{block.kind}>{_inline_markdown(block.text)}</{block.kind}>")
        elif block.kind == "p":
            body.append(f"<p>{_inline_markdown(block.text)}</p>")
        elif block.kind == "table":
            head = "".join(f"<th>{_inline_markdown(h)}</th>" for h in block.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline_markdown(c)}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif block.kind == "figure":
            encoded = base64.b64encode(plots[block.image]).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(block.text)}" '
                f'src="data:image/png;base64,{encoded}"><figcaption>'
                f"{_inline_markdown(block.text)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{HTML_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(
    metrics: dict[str, Any], rows: list[dict[str, Any]], out_dir: Path, notes: str = ""
) -> dict[str, Path]:
    """Write metrics.json, predictions.jsonl, plots/, report.md and report.html into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = build_plots(metrics)
    (out_dir / "plots").mkdir(exist_ok=True)
    for name, content in plots.items():
        (out_dir / "plots" / name).write_bytes(content)
    blocks = report_blocks(metrics, plots, notes)
    paths = {
        "metrics": out_dir / "metrics.json",
        "predictions": out_dir / "predictions.jsonl",
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
    paths["metrics"].write_text(to_json(metrics) + "\n", encoding="utf-8")
    paths["predictions"].write_text(
        "".join(json.dumps(jsonable(row), ensure_ascii=False) + "\n" for row in rows),
        encoding="utf-8",
    )
    paths["markdown"].write_text(render_markdown(blocks), encoding="utf-8")
    paths["html"].write_text(render_html(blocks, plots, blocks[0].text), encoding="utf-8")
    return paths
