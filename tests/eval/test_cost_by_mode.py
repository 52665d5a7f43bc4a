"""The report's cost per 1,000 postings in sync and through the Batch API, from rows built
the way `eval.llm_stage` builds them out of the reranker's results (real price table)."""

from __future__ import annotations

import pytest

from onet_llm.eval.llm_stage import llm_row
from onet_llm.eval.modes import llm_summary
from onet_llm.eval.sections_llm import cost_by_mode_blocks
from onet_llm.rerank.cost import Prices
from onet_llm.settings import Settings
from onet_llm.types import RerankResult


def result(tokens_in: int, tokens_out: int) -> RerankResult:
    return RerankResult(
        labels=[], source="llm", call_key="k", tokens_in=tokens_in, tokens_out=tokens_out
    )


def test_cost_per_1000_postings_in_sync_and_batch_for_each_llm_mode():
    prices = Prices(Settings())
    rows = [llm_row(result(1000, 80), prices, "gpt-4.1-mini") for _ in range(4)]
    hybrid = llm_summary(rows, n_rows=4)
    cascade = llm_summary([rows[0], None, None, None], n_rows=4)  # the rule sent one row of 4
    sync = (1000 * 0.40 + 80 * 1.60) / 1e6 * 1000  # USD per 1,000 postings, all sent
    assert hybrid["cost_per_1000_postings_usd"] == pytest.approx(sync)
    assert hybrid["batch_cost_per_1000_postings_usd"] == pytest.approx(sync / 2)
    assert cascade["batch_cost_per_1000_postings_usd"] == pytest.approx(sync / 2 / 4)
    reference = (1000 * 0.15 + 80 * 0.60) / 1e6 * 1000  # gpt-4o-mini, the reference model
    assert hybrid["reference_batch_cost_per_1000_postings_usd"] == pytest.approx(reference / 2)
    metrics = {
        "settings": {"llm": {"reference_model": "gpt-4o-mini"}},
        "modes": {"hybrid": {"llm": hybrid}, "cascade": {"llm": cascade}},
    }
    heading, table, note = cost_by_mode_blocks(metrics, ["hybrid", "cascade"])
    assert heading.text == "Cost per 1,000 postings: sync, batch and cascade"
    assert table.rows == (
        ("hybrid", "4", "$0.5280", "$0.2640", "$0.1980", "$0.0990"),
        ("cascade", "1", "$0.1320", "$0.0660", "$0.0495", "$0.0247"),  # 0.02475 rounded down
    )
    assert "Batch API" in note.text
