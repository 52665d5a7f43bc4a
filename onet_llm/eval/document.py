"""The pieces of a report: `Block`s, and how figures are written in them and on the terminal."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRIC_NAMES = {
    "top1": "top-1",
    "top3": "top-3",
    "top5": "top-5",
    "top10": "top-10",
    "mrr10": "MRR@10",
}


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


@dataclass(frozen=True)
class Block:
    kind: str  # h1 | h2 | h3 | p | table | figure | details
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    image: str = ""  # figure file name under plots/
