"""The report renderer: one list of blocks, the same content in Markdown and HTML."""

import json

from onet_llm.eval.blocks import SECTIONS, report_blocks
from onet_llm.eval.document import Block
from onet_llm.eval.report import render_html, render_markdown, to_json
from onet_llm.resources import SOURCE_ROOT

# The --note that report was written with.
NOTE = (
    "60-ad seeded sample (seed 0) of the test split; Qwen2.5-Coder-1.5B Q4_K_M served by "
    "llama.cpp on the same 2 CPU cores: a small local model, not the capable LLM the hybrid bar "
    "assumes. The cascade threshold is chosen on these same rows."
)
BLOCKS = [
    Block("h1", "Title with `code`"),
    Block("p", "Some **bold** <b>not html</b> | pipe"),
    Block("table", headers=("a", "b|c"), rows=(("1", "x|y"),)),
    Block("figure", "A figure", image="plot.png"),
]


def test_markdown_escapes_table_cells_and_links_figures():
    markdown = render_markdown(BLOCKS)
    assert markdown.startswith("# Title with `code`\n")
    assert "| a | b\\|c |\n|---|---|\n| 1 | x\\|y |" in markdown
    assert "![A figure](plots/plot.png)" in markdown


def test_html_escapes_text_and_embeds_figures():
    page = render_html(BLOCKS, {"plot.png": b"\x89PNG"}, "T <1>")
    assert "<title>T &lt;1&gt;</title>" in page
    assert "<h1>Title with <code>code</code></h1>" in page
    assert "<strong>bold</strong> &lt;b&gt;not html&lt;/b&gt;" in page
    assert 'src="data:image/png;base64,iVBORw=="' in page


def test_a_committed_report_renders_every_section_from_its_metrics():
    folder = SOURCE_ROOT / "eval" / "reports" / "dev-ads-test-hybrid-qwen1.5b"
    metrics = json.loads((folder / "metrics.json").read_text())
    plots = {name: b"" for name in ("accuracy_by_k.png", "by_major_group.png")}
    plots["accuracy_vs_cost.png"] = b""
    blocks = report_blocks(metrics, plots, NOTE)
    headings = [block.text for block in blocks if block.kind == "h2"]
    assert headings[0] == "Headline (8-digit O*NET)" and headings[-1] == "Files"
    assert "LLM calls, cost and latency" in headings and len(SECTIONS) == 13
    assert render_markdown(blocks) == (folder / "report.md").read_text()


def test_metrics_json_writes_infinities_as_strings():
    assert json.loads(to_json({"x": float("inf"), "y": float("nan"), "z": [1.5]})) == {
        "x": "inf",
        "y": None,
        "z": [1.5],
    }
