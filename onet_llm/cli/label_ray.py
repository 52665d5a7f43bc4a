"""`onet-llm label --engine ray`: the local engine's settings, store, LLM stage and summary
around `engine.ray_engine.label_with_ray`."""

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
    from onet_llm.cli.label import (
        open_infer_stages,
        open_reranker,
        open_run_labeler,
        print_label_summary,
        report_fallbacks,
        run_fingerprint,
    )
    from onet_llm.cli.progress import progress_bar
    from onet_llm.engine.ray_engine import label_with_ray
    from onet_llm.engine.shards import remote_uri, shown_uri
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
    if dry_run or (llm and settings.llm_mode == "batch"):
        raise OnetLLMError(
            "--engine ray runs the LLM stage in sync mode only (no --dry-run or "
            "--llm-mode batch yet): use the local engine for those"
        )
    with Store(settings.resolved_store_path, shared=True) as run_store:
        labeler, index_key = open_run_labeler(settings)
        fingerprint = run_fingerprint(labeler)
        reranker = None
        if llm:
            reranker = open_reranker(settings, run_store, labeler, fingerprint)
            if settings.infer_enabled:
                reranker = open_infer_stages(settings, reranker, labeler)
        with progress_bar("labelling (ray)", "rows", plain=False) as on_progress:
            summary = label_with_ray(
                labeler, index_key, run_store, spec, output, options, fingerprint,
                ray_options, settings.home, on_progress, reranker,
            )  # fmt: skip
        ledger = run_store.ledger(summary.run_id) if llm else None
        fallbacks = run_store.fallback_reasons(summary.run_id)
    print_label_summary(summary, ledger)
    report_fallbacks(summary.sources.get("fallback", 0), fallbacks, strict)
