"""The report's figures: matplotlib PNGs (written under plots/, embedded in report.html)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from onet_llm.eval.metrics import KS, LEVEL_NAMES, LEVELS
from onet_llm.taxonomy import SOC_MAJOR_GROUPS

MODE_COLOURS = {"embedding": "#4C72B0", "hybrid": "#DD8452", "cascade": "#55A868"}
# Distinct markers and dashes keep modes visible where their lines coincide.
MODE_STYLES = {
    "embedding": {"marker": "o", "linestyle": "-"},
    "hybrid": {"marker": "s", "linestyle": "--"},
    "cascade": {"marker": "^", "linestyle": ":"},
}


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
        [f"{group} {SOC_MAJOR_GROUPS.get(group, '')} (n={counts[group]})" for group in groups],
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
    axis.set_yticklabels([f"{g} {SOC_MAJOR_GROUPS.get(g, '')}" for g in gold_groups], fontsize=8)
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
    if metrics.get("coverage"):
        from onet_llm.eval.review_figures import plot_coverage

        plots["coverage.png"] = plot_coverage(metrics)
    return plots
