"""`onet-llm label --engine ray`: the local engine's settings, store, LLM stage and summary
around `engine.ray_engine.label_with_ray`.

`--dry-run` and `--llm-mode batch` first run the embedding stage on Ray as a run of its own
(`engine.ray_engine.embed_on_ray`), then plan from its committed rows with the local engine's
code (`plan.requests_for_rows`): the same estimate, or the same batches, cache and ledger. The
embedding stage's rows stay in the store, so the run after a dry run encodes nothing again."""

from __future__ import annotations

from pathlib import Path

from onet_llm.errors import OnetLLMError
from onet_llm.postings import LabelOptions
from onet_llm.settings import Settings


def label_on_ray(
    settings: Settings,
    spec: str,
    output: Path | None,
    options: LabelOptions,
    llm: bool,
    ray_options,
    dry_run: bool,
    strict: bool,
) -> None:
    """Label on Ray and print what the run did, as the local engine does."""
    from onet_llm.cli.common import console
    from onet_llm.cli.label import (
        open_infer_stages,
        open_reranker,
        open_run_labeler,
        print_label_summary,
        report_fallbacks,
        run_fingerprint,
    )
    from onet_llm.cli.progress import progress_bar
    from onet_llm.engine.ray_engine import label_with_ray, plan_job
    from onet_llm.engine.shards import release_work_folder, remote_uri, shown_uri
    from onet_llm.plan import check_plannable
    from onet_llm.store import Store

    if spec == "-" or str(output) == "-":
        raise OnetLLMError("--engine ray reads files and writes files: no '-' (stdin/stdout)")
    remote_output = remote_uri(str(output)) if output is not None else None
    if remote_output is not None:
        raise OnetLLMError(f"-o {shown_uri(remote_output)}: labels go to a local folder or file")
    uri = remote_uri(spec)
    if uri is not None:  # typer's Path folded `s3://` into `s3:/`
        spec = uri
        if output is None:
            raise OnetLLMError(f"{shown_uri(uri)}: give -o for the labels (a local folder or file)")
    batch = llm and settings.llm_mode == "batch"
    with Store(settings.resolved_store_path, shared=True) as run_store:
        labeler, index_key = open_run_labeler(settings)
        fingerprint = run_fingerprint(labeler)
        reranker = None
        if llm:
            reranker = open_reranker(settings, run_store, labeler, fingerprint)
            if dry_run or batch:  # before the embedding stage, which they need whole
                check_plannable(reranker, "--dry-run" if dry_run else "--llm-mode batch")
        job = plan_job(spec, output, options, fingerprint, index_key, ray_options, settings.home)
        try:
            if job.removed_stale:
                console.print(
                    f"removed {job.removed_stale} work folder(s) of earlier jobs whose input "
                    "changed since (such a job cannot resume)"
                )
            before_shards = None
            if dry_run or batch:
                embedded = run_embedding_stage(
                    labeler, index_key, run_store, job, options, ray_options
                )
                if dry_run:
                    print_ray_dry_run(settings, run_store, reranker, job, embedded, options.top_k)
                    return
                reranker, before_shards = open_ray_batch_mode(
                    settings, run_store, reranker, job, embedded.run_id, options.top_k
                )
            elif reranker is not None and settings.infer_enabled:
                reranker = open_infer_stages(settings, reranker, labeler)
            with progress_bar("labelling (ray)", "rows", plain=False) as on_progress:
                summary = label_with_ray(
                    labeler, index_key, run_store, job, options, ray_options, on_progress, reranker,
                    before_shards,
                )  # fmt: skip
        finally:
            release_work_folder(job.work)
        ledger = run_store.ledger(summary.run_id) if llm else None
        fallbacks = run_store.fallback_reasons(summary.run_id)
    print_label_summary(summary, ledger)
    report_fallbacks(summary.sources.get("fallback", 0), fallbacks, strict)


def run_embedding_stage(labeler, index_key: str, run_store, job, options, ray_options):
    """The embedding stage alone, on Ray, with its progress bar; its run record."""
    from onet_llm.cli.progress import progress_bar
    from onet_llm.engine.ray_engine import embed_on_ray

    with progress_bar("embedding stage (ray)", "rows", plain=False) as on_progress:
        return embed_on_ray(labeler, index_key, run_store, job, options, ray_options, on_progress)


def print_ray_dry_run(settings: Settings, run_store, reranker, job, embedded, top_k: int) -> None:
    """The local dry run's lines, priced from the embedding stage's committed rows, and one
    line saying that stage ran and is kept."""
    from onet_llm.cli.label import print_dry_run, print_kept_embedding_stage
    from onet_llm.engine.ray_engine import stored_rows
    from onet_llm.plan import estimate_requests, requests_for_rows

    rows = stored_rows(run_store, embedded.run_id, job.plan)
    print_dry_run(estimate_requests(requests_for_rows(rows, reranker, top_k), reranker), settings)
    print_kept_embedding_stage(embedded, job.plan.total_rows, settings)


def open_ray_batch_mode(settings: Settings, run_store, reranker, job, embedded: str, top_k: int):
    """`--llm-mode batch` on Ray: the local engine's batch path (`plan.send_batches`: submit
    what the cache lacks, wait for every batch) fed with the embedding stage's committed rows,
    as the `before_shards` step; then the LLM stage's pass reads the answers from the cache
    (`BatchAwareReranker`: what a batch could not answer is asked once in sync)."""
    from onet_llm.cli.batches import progress_printer
    from onet_llm.engine.ray_engine import stored_rows
    from onet_llm.plan import requests_for_rows, send_batches
    from onet_llm.rerank.batch_runner import BatchAwareReranker, BatchRunner

    meter = getattr(reranker.client, "meter", None)
    runner = BatchRunner(settings, run_store, reranker.prices, meter)
    on_progress = progress_printer()

    def prefill(run) -> None:
        planned = requests_for_rows(stored_rows(run_store, embedded, job.plan), reranker, top_k)
        send_batches(planned, reranker, runner, run.run_id, on_progress)

    return BatchAwareReranker(reranker, run_store), prefill
