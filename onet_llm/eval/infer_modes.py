"""The modes of the infer stage (`--llm-stages infer,rerank`), on the same rows as the others.

- `fused`: the LLM infers the occupation in plain words, the inferred titles are searched in
  the same index and fused with the posting's own shortlist (`onet_llm.rerank.fusion`); the
  fused ranking is the answer. One call per posting: it measures what retrieval alone adds.
- `infer-hybrid`: the product's rerank on the fused shortlist. Two calls per posting.

A posting whose infer call failed keeps its own shortlist (as the product does) and is counted
as a fallback. The fused shortlists are scored for recall beside the embedding's own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from onet_llm.errors import InputError
from onet_llm.eval.metrics import KS
from onet_llm.eval.modes import (
    EvalOptions,
    EvalRun,
    LLMRow,
    ModeOutcome,
    RerankStage,
    complete_ranking,
)


class InferStage(Protocol):
    """Postings + own shortlists in; per posting the fused shortlist (`types.Candidate`s) and
    what the infer call did (an `LLMRow` whose `predicted` are the fused codes)."""

    def __call__(
        self,
        titles: list[str],
        bodies: list[str],
        shortlists: list[list[Any]],
        on_row: Callable[[int], None] | None = None,
    ) -> list[tuple[list[Any], LLMRow]]: ...


def fused_outcome(fused: list[list[str]], infer_rows: list[LLMRow], depth: int) -> ModeOutcome:
    return ModeOutcome(
        "fused",
        [codes[:depth] for codes in fused],
        [row.source for row in infer_rows],
        list(infer_rows),
    )


def combine_rows(infer_row: LLMRow, rerank_row: LLMRow) -> LLMRow:
    """Both calls behind one posting's infer-hybrid answer: tokens, cost and latency add up;
    the picks are the rerank's; a failed infer call makes the row a fallback (to the own
    shortlist) and is named in the error."""

    def total(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a + b

    errors = [e for e in (infer_row.error and f"infer: {infer_row.error}", rerank_row.error) if e]
    return replace(
        rerank_row,
        source="fallback" if infer_row.source != "llm" else rerank_row.source,
        error="; ".join(errors) or None,
        cached=infer_row.cached and rerank_row.cached,
        tokens_in=(infer_row.tokens_in or 0) + (rerank_row.tokens_in or 0),
        tokens_out=(infer_row.tokens_out or 0) + (rerank_row.tokens_out or 0),
        cost_usd=total(infer_row.cost_usd, rerank_row.cost_usd),
        latency_s=total(infer_row.latency_s, rerank_row.latency_s),
        reference_cost_usd=total(infer_row.reference_cost_usd, rerank_row.reference_cost_usd),
        batch_cost_usd=total(infer_row.batch_cost_usd, rerank_row.batch_cost_usd),
        reference_batch_cost_usd=total(
            infer_row.reference_batch_cost_usd, rerank_row.reference_batch_cost_usd
        ),
        calls=infer_row.calls + rerank_row.calls,
        cached_calls=infer_row.cached_count + rerank_row.cached_count,
    )


def infer_hybrid_outcome(
    rerank_rows: list[LLMRow], infer_rows: list[LLMRow], fused: list[list[str]], depth: int
) -> ModeOutcome:
    predictions, rows = [], []
    for rerank_row, infer_row, codes in zip(rerank_rows, infer_rows, fused, strict=True):
        if rerank_row.source == "llm" and rerank_row.predicted:
            predictions.append(complete_ranking(rerank_row.predicted, codes, depth))
        else:
            predictions.append(codes[:depth])
        rows.append(combine_rows(infer_row, rerank_row))
    sources = [
        "fallback" if i.source != "llm" and r.source == "llm" else r.source
        for i, r in zip(infer_rows, rerank_rows, strict=True)
    ]
    return ModeOutcome("infer-hybrid", predictions, sources, rows)


def run_infer_modes(
    run: EvalRun,
    frame: Any,
    candidates: list[list[Any]],
    options: EvalOptions,
    rerank: RerankStage | None,
    infer: Any,
    notify: Callable[[str], None],
) -> dict[str, ModeOutcome]:
    """Infer + retrieve + fuse for every row (the `fused` mode), then the rerank on the fused
    shortlists (`infer-hybrid`) when asked for; the fused shortlists go into `run`."""
    if infer is None or rerank is None:
        raise InputError("the fused and infer-hybrid modes need an LLM (see --llm-model)")
    titles, bodies, depth = list(frame["title"]), list(frame["body"]), max(KS)
    notify(f"LLM infer of {len(frame)} rows (cached calls are free)")
    started = time.perf_counter()
    pairs = infer(titles, bodies, candidates, lambda done: notify(f"LLM infer: {done} rows"))
    run.seconds["infer"] = time.perf_counter() - started
    fused = [shortlist for shortlist, _ in pairs]
    infer_rows = [row for _, row in pairs]
    run.fused_shortlists = [[c.onet_code for c in row] for row in fused]
    outcomes = {"fused": fused_outcome(run.fused_shortlists, infer_rows, depth)}
    if "infer-hybrid" in options.modes or "cascade" in options.modes:
        notify(f"LLM rerank of {len(frame)} fused shortlists")
        started = time.perf_counter()
        rerank_rows = rerank(titles, bodies, fused, options.llm_top_k, None)
        run.seconds["infer_rerank"] = time.perf_counter() - started
        outcomes["infer-hybrid"] = infer_hybrid_outcome(
            rerank_rows, infer_rows, run.fused_shortlists, depth
        )
    return outcomes
