"""What a label run would send to the LLM, worked out before anything is sent: the input read,
shortlisted and put through the cascade rule (`label.needs_llm`), each selected row's prompt
rendered and looked up in the cache. The dry run counts and prices these requests; batch mode
turns the ones the cache lacks into Batch API lines, then waits for them, before the ordinary
labelling pass reads every answer from the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from onet_llm.errors import InputError
from onet_llm.label import Labeler, needs_llm
from onet_llm.postings import LabelInput
from onet_llm.tables import iter_table_chunks

if TYPE_CHECKING:
    from onet_llm.rerank.batch_runner import BatchProgress, BatchRunner
    from onet_llm.rerank.estimate import DryRun
    from onet_llm.rerank.reranker import Request, Reranker
    from onet_llm.store import RunRecord

Planned = tuple[int, "Request | None", bool]  # (row number, request or None: not sent, cached)


def check_plannable(reranker: Reranker, what: str) -> None:
    """Planning renders the rerank request of each row; with the infer stage first, that
    request depends on the infer call's answer, so it cannot be known in advance."""
    if reranker.settings.infer_enabled:
        raise InputError(f"{what} works with --llm-stages rerank only (infer,rerank asks twice)")


def planned_requests(labeler: Labeler, reranker: Reranker, opened: LabelInput) -> Iterator[Planned]:
    """Every input row with its request (None when the cascade rule keeps it on the embedding
    ranking or it has no text) and whether the cache already answers it. Reads the input
    afresh, so the labelling pass can read it again after."""
    options = opened.options
    first_row = 1
    for chunk in iter_table_chunks(opened.path, options.chunk_size, options.encoding):
        rows = labeler.label_chunk(chunk, first_row, options)
        first_row += len(chunk)
        for row in rows:
            if not needs_llm(row, reranker.settings):
                yield row.row_number, None, False
                continue
            request = reranker.render(row.posting, row.shortlist or [], options.top_k)
            cached = reranker.store.cached_call(request.call_key)
            yield row.row_number, request, cached is not None and bool(cached["response_parsed"])


def estimate_run(labeler: Labeler, reranker: Reranker, opened: LabelInput) -> DryRun:
    """The dry run: rows, cache hits, requests and tokens to send, and their cost."""
    from onet_llm.rerank.estimate import dry_run

    check_plannable(reranker, "--dry-run")
    settings = reranker.settings
    planned = (
        (number, request.messages if request else None, request.call_key if request else None, hit)
        for number, request, hit in planned_requests(labeler, reranker, opened)
    )
    output_tokens = reranker.store.median_tokens_out(settings.llm_model)
    return dry_run(planned, reranker.prices, settings.llm_model, output_tokens)


def batch_prefill(
    labeler: Labeler,
    reranker: Reranker,
    runner: BatchRunner,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> Callable[[RunRecord, LabelInput], None]:
    """The `before_chunks` step of `label_file` in batch mode: submit the requests the cache
    lacks (skipping those already in this run's batches), then wait for every batch."""
    from onet_llm.rerank.batch_runner import line_for

    check_plannable(reranker, "--llm-mode batch")

    def prefill(run: RunRecord, opened: LabelInput) -> None:
        lines = (
            line_for(request, reranker.settings)
            for _, request, cached in planned_requests(labeler, reranker, opened)
            if request is not None and not cached
        )
        runner.submit(lines, run.run_id)
        runner.wait(run.run_id, on_progress)

    return prefill
