"""`onet-llm label` and `onet-llm search`: the product's two ways in."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from onet_llm.cli.common import (
    BaseUrlOption,
    ConcurrencyOption,
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
from onet_llm.settings import Settings

InputArgument = Annotated[
    Path, typer.Argument(metavar="INPUT", help="Postings: .csv, .parquet or .jsonl")
]
OutputOption = Annotated[
    Path | None,
    typer.Option("-o", "--output", help="Default: INPUT-stem.labels.csv beside the input."),
]
TopKOption = Annotated[int, typer.Option("--top-k", help="Labels per posting.")]
IdColumnOption = Annotated[
    str | None, typer.Option("--id-column", help="Default: 'id' if present, else the row number.")
]
TitleColumnOption = Annotated[str, typer.Option("--title-column")]
BodyColumnOption = Annotated[str, typer.Option("--body-column", help="Optional column.")]
ChunkSizeOption = Annotated[
    int, typer.Option("--chunk-size", help="Rows read, labelled and committed at a time.")
]
SkipBadRowsOption = Annotated[
    bool, typer.Option("--skip-bad-rows", help="Keep going past empty rows (marked source=error).")
]
LlmOption = Annotated[
    bool, typer.Option("--llm", help="Rerank each shortlist with an LLM (stage 2).")
]
MaxCostOption = Annotated[
    float | None, typer.Option("--max-cost-usd", help="Stop cleanly before LLM spend passes this.")
]
LlmWhenOption = Annotated[
    str | None,
    typer.Option(
        "--llm-when", help="always | uncertain (only rows whose top-1 is not clearly ahead)."
    ),
]
CandidateOrderOption = Annotated[
    str | None,
    typer.Option("--candidate-order", help="embedding | shuffle: the order the LLM sees."),
]


def label(
    input_path: InputArgument,
    output: OutputOption = None,
    top_k: TopKOption = 5,
    shortlist_size: ShortlistSizeOption = 20,
    id_column: IdColumnOption = None,
    title_column: TitleColumnOption = "title",
    body_column: BodyColumnOption = "body",
    chunk_size: ChunkSizeOption = 1000,
    skip_bad_rows: SkipBadRowsOption = False,
    model: ModelOption = None,
    store: StoreOption = None,
    home: HomeOption = None,
    llm: LlmOption = False,
    llm_model: LlmModelOption = None,
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,
    max_cost_usd: MaxCostOption = None,
    llm_when: LlmWhenOption = None,
    candidate_order: CandidateOrderOption = None,
    llm_stages: LlmStagesOption = None,
    fusion: FusionOption = None,
    infer_examples: InferExamplesOption = None,
) -> None:
    """Label each posting with its top K O*NET occupations."""
    from onet_llm.label import LabelOptions, open_input

    settings = Settings.load(
        home=home,
        embedding_model=model,
        store_path=store,
        llm_model=llm_model,
        openai_base_url=base_url,
        llm_concurrency=concurrency,
        max_cost_usd=max_cost_usd,
        llm_when=llm_when,
        candidate_order=candidate_order,
        llm_stages=llm_stages,
        fusion=fusion,
        infer_examples=infer_examples,
    )
    options = LabelOptions(
        top_k=top_k,
        shortlist_size=shortlist_size,
        id_column=id_column,
        title_column=title_column,
        body_column=body_column,
        chunk_size=chunk_size,
        skip_bad_rows=skip_bad_rows,
    )
    opened = open_input(input_path, output, options)  # fails fast, before the model loads
    summary, llm_ledger = run_labelling(settings, opened, output, llm)
    print_label_summary(summary, llm_ledger)


@contextmanager
def label_progress():
    """A transient progress bar on stderr; yields the `on_progress(done, total)` callback."""
    with Progress(
        TextColumn("labelling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("label", total=None, rate="")

        def on_progress(done: int, total: int | None) -> None:
            rate = f"{progress.tasks[0].speed or 0:,.0f} rows/s"
            progress.update(task, completed=done, total=total, rate=rate)

        yield on_progress


def run_labelling(settings: Settings, opened, output: Path | None, llm: bool):
    """Load the model and index, label into the store and the output; the summary, and the
    LLM ledger of the run when `llm`."""
    from onet_llm.label import label_file, open_labeler
    from onet_llm.store import Store

    with err_console.status("loading model and index (first run builds the index, ~2 min)"):
        labeler, index_key = open_labeler(settings.embedding_model, settings.index_cache_dir)
    with Store(settings.resolved_store_path) as run_store, label_progress() as on_progress:
        fingerprint: dict = {"model": labeler.encoder.model_id}
        reranker = None
        if llm:
            from onet_llm.rerank.reranker import Reranker

            reranker = Reranker(settings, run_store, labeler.taxonomy)
            warn_if_measured_worse(run_store, settings)
            if settings.infer_enabled:
                reranker = open_infer_stages(settings, reranker, labeler)
            fingerprint["llm"] = settings.llm_fingerprint()
        summary = label_file(
            labeler, run_store, opened, output, opened.options, fingerprint, index_key,
            on_progress, reranker,
        )  # fmt: skip
        return summary, run_store.ledger(summary.run_id) if llm else None


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


def print_label_summary(summary, llm_ledger) -> None:
    resumed = f" (resumed after row {summary.resumed_from})" if summary.resumed_from else ""
    console.print(
        f"labelled {summary.rows} rows in {summary.seconds:.1f}s{resumed} -> {summary.output_path}"
    )
    console.print(f"run {summary.run_id}; sources: {summary.sources}")
    if llm_ledger is not None:
        print_ledger(llm_ledger, title="LLM requests in this run")
    if summary.top_codes:
        table = Table("top-1 code", "occupation", "rows", title="most frequent top-1 labels")
        for code, title, count in summary.top_codes:
            table.add_row(code, title, str(count))
        console.print(table)


def search(
    text: Annotated[
        str, typer.Argument(help="A job title, optionally followed by text from the posting.")
    ],
    shortlist_size: Annotated[int, typer.Option("--shortlist-size", "-n")] = 20,
    body: Annotated[str, typer.Option("--body", help="Posting body, if any.")] = "",
    model: ModelOption = None,
    home: HomeOption = None,
) -> None:
    """Print the shortlist for one posting."""
    from onet_llm.label import open_labeler

    settings = Settings.load(home=home, embedding_model=model)
    labeler, _ = open_labeler(settings.embedding_model, settings.index_cache_dir)
    shortlist = labeler.shortlist([text], [body], shortlist_size)[0]
    table = Table("#", "O*NET code", "occupation", "score", title=f"shortlist for {text!r}")
    for rank, candidate in enumerate(shortlist, start=1):
        table.add_row(
            str(rank), candidate.onet_code, candidate.onet_title, f"{candidate.score:.3f}"
        )
    console.print(table)
