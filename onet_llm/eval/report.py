"""Turn an evaluation's metrics into report.md, a self-contained report.html and plots.

Both documents are rendered from one list of blocks (headings, paragraphs, tables, figures), so
the Markdown and the HTML always say the same thing. Plots are matplotlib PNGs: written next to
report.md (which links them) and embedded as base64 in report.html (which needs nothing else,
so it opens offline and can be mailed around). The page is the Jinja2 template
`templates/report.html` with `templates/report.css`.
"""

from __future__ import annotations

import base64
import functools
import html
import json
from pathlib import Path
from typing import Any

import jinja2
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


# The kinds of block report.html renders (templates/report.html has one branch for each).
HTML_KINDS = frozenset({"h1", "h2", "h3", "p", "table", "figure"})


@functools.cache
def _templates() -> jinja2.Environment:
    """report.html and its report.css, found through the package (shipped in the wheel)."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("onet_llm.eval", "templates"),
        autoescape=False,  # every value goes through `inline` or `escape_html` in the template
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["inline"] = _inline_markdown
    environment.filters["escape_html"] = html.escape
    environment.filters["base64"] = lambda data: base64.b64encode(data).decode("ascii")
    return environment


def render_html(blocks: list[Block], plots: dict[str, bytes], title: str) -> str:
    """A self-contained page: the style inline, the plots embedded as base64."""
    template = _templates().get_template("report.html")
    return template.render(blocks=blocks, plots=plots, title=title, kinds=HTML_KINDS)


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
