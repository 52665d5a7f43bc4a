"""What a label run would send to the LLM, worked out before anything is sent: the rows its
embedding stage committed to the store (`label.embed_file`, or `--engine ray`'s
`embed_on_ray`) put through the cascade rule (`label.needs_llm`), each selected row's prompt
rendered and looked up in the cache. The dry run counts and prices these requests; batch mode
turns the ones the cache lacks into Batch API lines, then waits for them, before the LLM
stage's pass reads every answer from the cache. Both engines share one pricing and one batch
path, and neither encodes a row twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from onet_llm.errors import InputError
from onet_llm.label import needs_llm
from onet_llm.types import LabelledRow

if TYPE_CHECKING:
    from onet_llm.rerank.batch_runner import BatchProgress, BatchRunner
    from onet_llm.rerank.estimate import DryRun
    from onet_llm.rerank.reranker import Request, Reranker

Planned = tuple[int, "Request | None", bool]  # (row number, request or None: not sent, cached)


def check_plannable(reranker: Reranker, what: str) -> None:
    """Planning renders the rerank request of each row; with the infer stage first, that
    request depends on the infer call's answer, so it cannot be known in advance."""
    if reranker.settings.infer_enabled:
        raise InputError(f"{what} works with --llm-stages rerank only (infer,rerank asks twice)")


def requests_for_rows(
    rows: Iterable[LabelledRow], reranker: Reranker, top_k: int
) -> Iterator[Planned]:
    """Each row with its request (None when the cascade rule keeps it on the embedding
    ranking or it has no text) and whether the cache already answers it. The rows come from
    the embedding stage's run in the store (`label.stored_run_rows`; `--engine ray`:
    `stored_rows`): the same rows give the same requests."""
    for row in rows:
        if not needs_llm(row, reranker.settings):
            yield row.row_number, None, False
            continue
        request = reranker.render(row.posting, row.shortlist or [], top_k)
        cached = reranker.store.cached_call(request.call_key)
        yield row.row_number, request, cached is not None


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
