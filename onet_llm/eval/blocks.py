"""The report as one list of blocks (headings, paragraphs, tables, figures), one function per
section, so that report.md and report.html always say the same thing."""

from __future__ import annotations

from typing import Any

from onet_llm.eval.document import Block
from onet_llm.eval.sections_breakdown import (
    confusion_section,
    major_group_section,
    occupation_section,
)
from onet_llm.eval.sections_infer import versus_embedding_section
from onet_llm.eval.sections_llm import cascade_section, llm_section
from onet_llm.eval.sections_review import coverage_section, misclassified_section
from onet_llm.eval.sections_summary import (
    differences_section,
    files_section,
    headline_section,
    intro_section,
    ranking_metrics_section,
)

__all__ = ["Block", "SECTIONS", "report_blocks"]


SECTIONS = (
    intro_section,
    headline_section,
    versus_embedding_section,
    ranking_metrics_section,
    differences_section,
    llm_section,
    cascade_section,
    coverage_section,
    misclassified_section,
    major_group_section,
    confusion_section,
    occupation_section,
    files_section,
)


def report_blocks(metrics: dict[str, Any], plots: dict[str, bytes], notes: str = "") -> list[Block]:
    """The whole document, one section after another (see SECTIONS)."""
    modes = list(metrics["modes"])
    return [block for section in SECTIONS for block in section(metrics, modes, plots, notes)]
