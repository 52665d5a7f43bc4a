"""Turn an evaluation's metrics into report.md, a self-contained report.html and plots.

Both documents are rendered from one list of blocks (headings, paragraphs, tables, figures), so
the Markdown and the HTML always say the same thing. Plots are matplotlib PNGs: written next to
report.md (which links them) and embedded as base64 in report.html (which needs nothing else,
so it opens offline and can be mailed around).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from onet_llm.eval.blocks import Block, report_blocks
from onet_llm.eval.plots import build_plots


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
