"""What a label run would send to the LLM, worked out before anything is sent: the input read,
shortlisted and put through the cascade rule (`label.needs_llm`), each selected row's prompt
rendered and looked up in the cache. The dry run counts and prices these requests; batch mode
turns the ones the cache lacks into Batch API lines, then waits for them, before the ordinary
labelling pass reads every answer from the cache. `--engine ray` plans from the rows its
embedding stage committed to the store instead of reading the input (`requests_for_rows`), so
both engines share one pricing and one batch path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from onet_llm.errors import InputError
from onet_llm.label import Labeler, needs_llm
from onet_llm.postings import LabelInput
from onet_llm.tables import iter_table_chunks
from onet_llm.types import LabelledRow

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
    """Every input row with its request and whether the cache already answers it (see
    `requests_for_rows`). Reads the input afresh, so the labelling pass can read it again
    after."""
    return requests_for_rows(shortlisted_rows(labeler, opened), reranker, opened.options.top_k)


def shortlisted_rows(labeler: Labeler, opened: LabelInput) -> Iterator[LabelledRow]:
    """The input's rows through the embedding stage, a chunk at a time."""
    options = opened.options
    first_row = 1
    for chunk in iter_table_chunks(opened.path, options.chunk_size, options.encoding):
        yield from labeler.label_chunk(chunk, first_row, options)
        first_row += len(chunk)


def requests_for_rows(
    rows: Iterable[LabelledRow], reranker: Reranker, top_k: int
) -> Iterator[Planned]:
    """Each row with its request (None when the cascade rule keeps it on the embedding
    ranking or it has no text) and whether the cache already answers it. The rows come from
    the input (`shortlisted_rows`, the local engine) or from the store (`--engine ray`, whose
    embedding stage committed them): the same rows give the same requests."""
    for row in rows:
        if not needs_llm(row, reranker.settings):
            yield row.row_number, None, False
            continue
        request = reranker.render(row.posting, row.shortlist or [], top_k)
        cached = reranker.store.cached_call(request.call_key)
        yield row.row_number, request, cached is not None


def estimate_run(labeler: Labeler, reranker: Reranker, opened: LabelInput) -> DryRun:
    """The dry run: rows, cache hits, requests and tokens to send, and their cost."""
    return estimate_requests(planned_requests(labeler, reranker, opened), reranker)


def estimate_requests(planned: Iterable[Planned], reranker: Reranker) -> DryRun:
    """The dry run's figures for planned rows, from whichever engine planned them."""
    from onet_llm.rerank.estimate import dry_run

    check_plannable(reranker, "--dry-run")
    settings = reranker.settings
    messages = (
        (number, request.messages if request else None, request.call_key if request else None, hit)
        for number, request, hit in planned
    )
    output_tokens = reranker.store.median_tokens_out(settings.llm_model)
    return dry_run(messages, reranker.prices, settings.llm_model, output_tokens)


def batch_prefill(
    labeler: Labeler,
    reranker: Reranker,
    runner: BatchRunner,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> Callable[[RunRecord, LabelInput], None]:
    """The `before_chunks` step of `label_file` in batch mode: submit the requests the cache
    lacks (skipping those already in this run's batches), then wait for every batch."""
    check_plannable(reranker, "--llm-mode batch")

    def prefill(run: RunRecord, opened: LabelInput) -> None:
        planned = planned_requests(labeler, reranker, opened)
        send_batches(planned, reranker, runner, run.run_id, on_progress)

    return prefill


def send_batches(
    planned: Iterable[Planned],
    reranker: Reranker,
    runner: BatchRunner,
    run_id: str,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> None:
    """Submit the planned requests the cache lacks (skipping those already in this run's
    batches), then wait for every batch of the run (both engines)."""
    from onet_llm.rerank.batch_runner import line_for

    lines = (
        line_for(request, reranker.settings)
        for _, request, cached in planned
        if request is not None and not cached
    )
    runner.submit(lines, run_id)
    runner.wait(run_id, on_progress)
