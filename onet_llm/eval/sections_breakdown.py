"""The report's breakdowns: by major group, confusion between groups, by occupation."""

from __future__ import annotations

from typing import Any

from onet_llm.eval.document import Block, pct
from onet_llm.taxonomy import SOC_MAJOR_GROUPS


def major_group_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    """Accuracy by the gold code's SOC major group."""
    blocks: list[Block] = []
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
    return blocks


def confusion_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    """Cross-group errors per mode, with the confusion figure."""
    blocks: list[Block] = []
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
    return blocks


def occupation_section(
    metrics: dict[str, Any], modes: list[str], plots: dict[str, bytes], notes: str
) -> list[Block]:
    """Top-1 hits and the most frequent wrong label per occupation."""
    blocks: list[Block] = []
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
    return blocks
