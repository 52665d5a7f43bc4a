"""`onet-llm label` and `onet-llm search`: the product's two ways in."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from onet_llm.cli.choices import Engine, value
from onet_llm.cli.common import (
    BaseUrlOption,
    ConcurrencyOption,
    EncoderBackendOption,
    FusionOption,
    HomeOption,
    InferExamplesOption,
    LlmModelOption,
    LlmStagesOption,
    ModelOption,
    ShortlistSizeOption,
    StoreOption,
    console,
    err_console,
    print_ledger,
)
from onet_llm.cli.label_options import (
    AllowDuplicateIdsOption,
    BodyColumnOption,
    CandidateOrderOption,
    ChunkSizeOption,
    DryRunOption,
    EncodingOption,
    EngineOption,
    IdColumnOption,
    InputArgument,
    InputFormatOption,
    KeepAllColumnsOption,
    KeepColumnsOption,
    LlmModeOption,
    LlmOption,
    LlmWhenOption,
    MaxCostOption,
    OutputOption,
    RayActorsOption,
    RayAddressOption,
    ShardRowsOption,
    SkipBadRowsOption,
    StrictOption,
    TitleColumnOption,
    TopKOption,
    WorkDirOption,
)
from onet_llm.errors import OnetLLMError
from onet_llm.settings import Settings


def label(
    input_path: InputArgument,
    output: OutputOption = None,
    top_k: TopKOption = 5,
    shortlist_size: ShortlistSizeOption = 20,
    id_column: IdColumnOption = None,
    title_column: TitleColumnOption = "title",
    body_column: BodyColumnOption = "body",
    keep_columns: KeepColumnsOption = None,
    keep_all_columns: KeepAllColumnsOption = False,
    allow_duplicate_ids: AllowDuplicateIdsOption = False,
    encoding: EncodingOption = "utf-8",
    input_format: InputFormatOption = None,
    chunk_size: ChunkSizeOption = 1000,
    skip_bad_rows: SkipBadRowsOption = False,
    model: ModelOption = None,
    encoder_backend: EncoderBackendOption = None,
    store: StoreOption = None,
    home: HomeOption = None,
    llm: LlmOption = False,
    llm_model: LlmModelOption = None,
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,
    max_cost_usd: MaxCostOption = None,
    llm_when: LlmWhenOption = None,
    candidate_order: CandidateOrderOption = None,
    strict: StrictOption = False,
    llm_stages: LlmStagesOption = None,
    fusion: FusionOption = None,
    infer_examples: InferExamplesOption = None,
    llm_mode: LlmModeOption = None,
    dry_run: DryRunOption = False,
    engine: EngineOption = Engine.local,
    ray_address: RayAddressOption = None,
    ray_actors: RayActorsOption = None,
    shard_rows: ShardRowsOption = 10_000,
    work_dir: WorkDirOption = None,
) -> None:
    """Label each posting with its top K O*NET occupations."""
    from onet_llm.postings import LabelOptions, open_input, spool_stdin

    settings = Settings.load(
        home=home,
        embedding_model=model,
        encoder_backend=value(encoder_backend),
        store_path=store,
        llm_model=llm_model,
        openai_base_url=base_url,
        llm_concurrency=concurrency,
        max_cost_usd=max_cost_usd,
        llm_when=value(llm_when),
        candidate_order=value(candidate_order),
        llm_stages=llm_stages,
        fusion=fusion,
        infer_examples=infer_examples,
        llm_mode=llm_mode,
    )
    if dry_run and not llm:
        raise OnetLLMError("--dry-run estimates the LLM stage: add --llm")
    options = LabelOptions(
        top_k=top_k,
        shortlist_size=shortlist_size,
        id_column=id_column,
        title_column=title_column,
        body_column=body_column,
        chunk_size=chunk_size,
        skip_bad_rows=skip_bad_rows,
        encoding=encoding,
        keep_columns=tuple(name.strip() for name in (keep_columns or "").split(",") if name),
        keep_all_columns=keep_all_columns,
        allow_duplicate_ids=allow_duplicate_ids,
    )
    if engine == Engine.ray:
        from onet_llm.cli.label_ray import label_on_ray
        from onet_llm.engine.ray_engine import RayOptions

        ray_options = RayOptions(ray_address, ray_actors, shard_rows, work_dir)
        return label_on_ray(
            settings, str(input_path), output, options, llm, ray_options, dry_run, strict
        )
    from onet_llm.engine.shards import remote_uri, shown_uri

    if (uri := remote_uri(str(input_path))) is not None:
        raise OnetLLMError(
            f"{shown_uri(uri)}: a URI input is read by --engine ray only "
            "(or copy it to a local file)"
        )
    stdin = str(input_path) == "-"
    if stdin:
        input_path = spool_stdin(sys.stdin.buffer, settings.home / "stdin", value(input_format))
    to_stdout = str(output) == "-" or (stdin and output is None)
    if to_stdout:
        output = stdout_spool_path(input_path, settings.home / "stdout")
    opened = open_input(input_path, output, options)  # fails fast, before the model loads
    for warning in opened.warnings:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if dry_run:
        try:
            estimate, embedded = estimate_labelling(settings, opened, output)
            print_dry_run(estimate, settings)
            if not stdin:  # a spooled stdin is another file on the next run
                print_kept_embedding_stage(embedded, opened.total_rows, settings)
        finally:
            if stdin:
                input_path.unlink(missing_ok=True)
        return
    try:
        summary, llm_ledger, fallbacks = run_labelling(settings, opened, output, llm)
        if to_stdout:
            sys.stdout.buffer.write(summary.output_path.read_bytes())
            sys.stdout.flush()
    finally:
        if stdin:
            input_path.unlink(missing_ok=True)
        if to_stdout and output is not None:
            output.unlink(missing_ok=True)
    if to_stdout:
        print_label_summary(summary, llm_ledger, err_console, destination="stdout")
    else:
        print_label_summary(summary, llm_ledger)
    report_fallbacks(summary.sources.get("fallback", 0), fallbacks, strict)


def report_fallbacks(count: int, reasons: list[tuple[str, int]], strict: bool) -> None:
    """A run that ends with fallback rows says so, with the reasons (exit 0: the labels are
    the embedding's); `--strict` makes it an error."""
    if not count:
        return
    rows = "1 row" if count == 1 else f"{count:,} rows"
    why = "; ".join(f"{n} x {reason}" for reason, n in reasons)
    message = f"{rows} fell back to the embedding ranking (source=fallback): {why}"
    if strict:
        raise OnetLLMError(f"--strict: {message}")
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def stdout_spool_path(input_path: Path, folder: Path) -> Path:
    """Where a run writing to stdout puts its output first (copied out when complete): JSONL
    or TSV like its input, CSV otherwise."""
    suffix = input_path.suffix.lower()
    extension = suffix if suffix in (".jsonl", ".tsv") else ".csv"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{input_path.stem}.labels{extension}"


def run_labelling(settings: Settings, opened, output: Path | None, llm: bool):
    """Load the model and index, label into the store and the output; the summary, and the
    LLM ledger of the run when `llm`."""
    from onet_llm.store import Store

    # The store first: one in use by another run is an error before the model loads; readers
    # (ledger, runs, review) may still open it between commits.
    with Store(settings.resolved_store_path, shared=True) as run_store:
        labeler, index_key = open_run_labeler(settings)
        return label_into(settings, run_store, labeler, index_key, opened, output, llm)


def open_run_labeler(settings: Settings):
    """The labeler and index key of a run, with a progress bar when the index must be built."""
    from onet_llm.cli.progress import export_encoder_now, progress_bar
    from onet_llm.label import open_labeler

    with progress_bar("building the occupation index (once per model)", "titles") as building:
        labeler, index_key = open_labeler(
            settings.embedding_model,
            settings.index_cache_dir,
            on_build_progress=building,
            encoder_options=settings.encoder_options(),
        )
    export_encoder_now(labeler.encoder, _notice)
    return labeler, index_key


def _notice(message: str) -> None:
    err_console.print(message, highlight=False, soft_wrap=True)


def run_fingerprint(labeler) -> dict:
    """What, besides the input and options, makes two runs the same: the model, and the
    backend when its vectors are approximate (int8). torch and fp32 ONNX give the same
    vectors, so a run started on one resumes on the other (and runs from before `auto` made
    ONNX the default keep their keys)."""
    from onet_llm.shortlist.onnx import EXACT_BACKENDS

    fingerprint: dict = {"model": labeler.encoder.model_id}
    if labeler.encoder.backend not in EXACT_BACKENDS:
        fingerprint["encoder_backend"] = labeler.encoder.backend
    return fingerprint


def label_into(settings: Settings, run_store, labeler, index_key: str, opened, output, llm: bool):
    """The labelling itself, into an open store: the summary, the LLM ledger (when `llm`) and
    the reasons rows fell back. With the LLM stage, a complete run of the same job's
    embedding stage (the same command without `--llm`, a dry run, batch mode) gives the
    shortlists, so nothing is encoded twice; batch mode runs that stage first, in full."""
    from onet_llm.cli.progress import progress_bar
    from onet_llm.label import complete_embedding_run, label_file, label_job
    from onet_llm.plan import check_plannable

    fingerprint = run_fingerprint(labeler)
    embedding_job = label_job(opened, output, opened.options, dict(fingerprint), index_key)
    reranker = None
    before_chunks = None
    embedded = None
    if llm:  # before the progress bar: loading the infer examples shows its own status line
        reranker = open_reranker(settings, run_store, labeler, fingerprint)
        if settings.llm_mode == "batch":
            check_plannable(reranker, "--llm-mode batch")  # before the embedding stage
            embedded = run_embedding_stage(labeler, run_store, embedding_job, index_key).run_id
            reranker, before_chunks = open_batch_mode(
                settings, run_store, reranker, embedded, opened.options.top_k
            )
        else:
            if settings.infer_enabled:
                reranker = open_infer_stages(settings, reranker, labeler)
            found = complete_embedding_run(run_store, embedding_job)
            embedded = found.run_id if found else None
    with progress_bar("labelling", "rows", plain=False) as on_progress:
        summary = label_file(
            labeler, run_store, opened, output, opened.options, fingerprint, index_key,
            on_progress, reranker, before_chunks, embedded,
        )  # fmt: skip
    ledger = run_store.ledger(summary.run_id) if llm else None
    return summary, ledger, run_store.fallback_reasons(summary.run_id)


def run_embedding_stage(labeler, run_store, job, index_key: str):
    """The job's embedding stage alone, with its progress bar; its run record (`embed_file`)."""
    from onet_llm.cli.progress import progress_bar
    from onet_llm.label import embed_file

    with progress_bar("embedding stage", "rows", plain=False) as on_progress:
        return embed_file(labeler, run_store, job, index_key, on_progress)


def open_reranker(settings: Settings, run_store, labeler, fingerprint: dict):
    """The LLM stage of a run (both engines): warns when an evaluation in this store measured
    this LLM lowering top-1, and adds the LLM to the run's fingerprint."""
    from onet_llm.rerank.reranker import Reranker

    reranker = Reranker(settings, run_store, labeler.taxonomy)
    warn_if_measured_worse(run_store, settings)
    fingerprint["llm"] = settings.llm_fingerprint()
    return reranker


def open_batch_mode(settings: Settings, run_store, reranker, embedded: str, top_k: int):
    """`--llm-mode batch`: the step that submits and waits for the batches before the
    labelling pass (planned from the embedding stage's committed run `embedded`), and the
    reranker of that pass (answers from the cache, the rest in sync)."""
    from onet_llm.cli.batches import progress_printer
    from onet_llm.label import stored_run_rows
    from onet_llm.plan import requests_for_rows, send_batches
    from onet_llm.rerank.batch_runner import BatchAwareReranker, BatchRunner

    meter = getattr(reranker.client, "meter", None)
    runner = BatchRunner(settings, run_store, reranker.prices, meter)
    on_progress = progress_printer()

    def prefill(run, _opened) -> None:
        planned = requests_for_rows(stored_run_rows(run_store, embedded), reranker, top_k)
        send_batches(planned, reranker, runner, run.run_id, on_progress)

    return BatchAwareReranker(reranker, run_store), prefill


def estimate_labelling(settings: Settings, opened, output: Path | None):
    """`--dry-run`: the plan of the LLM stage, priced, and the embedding stage's run. No LLM
    is called and no output is written; the embedding stage runs in full and is kept in the
    store, so the same command without `--dry-run` (or without `--llm`) encodes nothing
    again."""
    from onet_llm.label import label_job, stored_run_rows
    from onet_llm.plan import check_plannable, estimate_requests, requests_for_rows
    from onet_llm.rerank.reranker import Reranker
    from onet_llm.store import Store

    with Store(settings.resolved_store_path, shared=True) as run_store:
        labeler, index_key = open_run_labeler(settings)
        reranker = Reranker(settings, run_store, labeler.taxonomy)
        check_plannable(reranker, "--dry-run")  # before minutes of encoding
        job = label_job(opened, output, opened.options, run_fingerprint(labeler), index_key)
        embedded = run_embedding_stage(labeler, run_store, job, index_key)
        rows = stored_run_rows(run_store, embedded.run_id)
        planned = requests_for_rows(rows, reranker, opened.options.top_k)
        return estimate_requests(planned, reranker), embedded


def print_kept_embedding_stage(embedded, rows: int | None, settings: Settings, out=console) -> None:
    """The dry run's last line: its embedding stage is kept, and what that saves."""
    counted = f"{rows:,} rows" if rows is not None else "every row"
    out.print(
        f"the embedding stage is kept: run {embedded.run_id}, {counted} in "
        f"{settings.resolved_store_path}; the same command without --dry-run starts the LLM "
        "stage from these shortlists (no encoding again)",
        highlight=False,
        soft_wrap=True,
    )


def print_dry_run(estimate, settings: Settings, out=console) -> None:
    """The dry run's figures, one per line."""

    def money(value: float | None) -> str:
        return "unknown (no price for this model)" if value is None else f"${value:,.4f}"

    lines = [
        f"dry run: no LLM was called; model {settings.llm_model}, --llm-when {settings.llm_when}",
        f"rows: {estimate.rows:,}; the cascade rule sends {estimate.selected:,} to the LLM",
        f"cache hits: {estimate.cache_hits:,} (cost nothing)",
        f"requests to send: {estimate.requests:,}",
        f"estimated tokens: {estimate.tokens_in:,} in / {estimate.tokens_out:,} out "
        f"({estimate.mean_prompt_tokens:,.0f} in per request; "
        f"{estimate.shared_prefix_tokens:,} of them shared by every request)",
        f"estimated cost, sync: {money(estimate.cost_sync_usd)} "
        f"({money(estimate.per_1000(estimate.cost_sync_usd))} per 1,000 rows)",
        f"estimated cost, batch (--llm-mode batch): {money(estimate.cost_batch_usd)} "
        f"({money(estimate.per_1000(estimate.cost_batch_usd))} per 1,000 rows)",
        f"prices as of {estimate.prices_checked}; tokens estimated from characters "
        "(see onet_llm/rerank/estimate.py)",
    ]
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)


def open_infer_stages(settings: Settings, reranker, labeler):
    """`--llm-stages infer,rerank`: the reranker behind the infer -> retrieve -> fuse step."""
    from onet_llm.rerank.examples import ExamplePool
    from onet_llm.rerank.stages import InferRerank

    pool = None
    if settings.infer_examples > 0:
        with err_console.status("loading the infer examples (first run encodes them, ~minutes)"):
            pool = ExamplePool.load(labeler.encoder, labeler.taxonomy, settings.index_cache_dir)
    return InferRerank(reranker, labeler, pool)


def warn_if_measured_worse(run_store, settings: Settings) -> None:
    """One line on stderr when an evaluation in this store measured this LLM (with these
    stages) lowering top-1 against embedding-only."""
    from onet_llm.eval.guard import measured_harm

    warning = measured_harm(run_store, settings.llm_model, settings.llm_stages)
    if warning:
        err_console.print(f"warning: {warning}", style="yellow", highlight=False, soft_wrap=True)


def print_label_summary(summary, llm_ledger, out=console, destination: str | None = None) -> None:
    """What the run did; on stderr (`out=err_console`) when the labels go to stdout."""
    from rich.table import Table

    resumed = f" (resumed after row {summary.resumed_from})" if summary.resumed_from else ""
    where = destination or summary.output_path
    out.print(f"labelled {summary.rows} rows in {summary.seconds:.1f}s{resumed} -> {where}")
    out.print(f"run {summary.run_id}; sources: {summary.sources}")
    if llm_ledger is not None:
        print_ledger(llm_ledger, title="LLM requests in this run", out=out)
    if summary.top_codes:
        table = Table("top-1 code", "occupation", "rows", title="most frequent top-1 labels")
        for code, title, count in summary.top_codes:
            table.add_row(code, title, str(count))
        out.print(table)


def search(
    titles: Annotated[
        list[str] | None, typer.Argument(help="One or more job titles (quote each one).")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="Titles to search: a .txt file (one per line) or a postings table."
        ),
    ] = None,
    shortlist_size: Annotated[
        int, typer.Option("--shortlist-size", "-n", help="Occupations per title.")
    ] = 20,
    body: Annotated[str, typer.Option("--body", help="Posting body, if any.")] = "",
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON array of {title, matches} on stdout.")
    ] = False,
    model: ModelOption = None,
    encoder_backend: EncoderBackendOption = None,
    home: HomeOption = None,
) -> None:
    """Print the shortlist for one or more titles."""
    import json

    from onet_llm.api import Labeler
    from onet_llm.errors import InputError

    wanted = list(titles or []) + (read_titles(file) if file else [])
    if not wanted:
        raise InputError("give one or more titles, or --file")
    labeler = Labeler(model or "default", home=home, encoder_backend=value(encoder_backend))
    results = labeler.search(wanted, bodies=[body] * len(wanted), size=shortlist_size)
    if json_output:
        sys.stdout.write(json.dumps([r.as_record() for r in results], indent=2) + "\n")
        return
    from rich.table import Table

    for result in results:
        table = Table("#", "O*NET code", "occupation", "score", title=f"{result.title!r}")
        for match in result.matches:
            table.add_row(str(match.rank), match.onet_code, match.onet_title, f"{match.score:.3f}")
        console.print(table)


def read_titles(path: Path) -> list[str]:
    """Titles from a text file (one per line) or the title column of a postings table."""
    from onet_llm.errors import InputError

    if path.suffix.lower() in (".txt", ""):
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    from onet_llm.postings import LabelOptions, posting_fields, resolve_columns
    from onet_llm.tables import iter_table_chunks

    titles: list[str] = []
    options = None
    for chunk in iter_table_chunks(path, 10_000):
        options = options or resolve_columns(chunk.columns, path, LabelOptions())
        titles += posting_fields(chunk, 1, options)[1]
    return titles
