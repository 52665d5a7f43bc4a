"""The `onet-llm` command line. Thin: parse options, build settings, call the library, print."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from onet_llm import ONET_ATTRIBUTION, __version__
from onet_llm.errors import OnetLLMError
from onet_llm.settings import Settings

if TYPE_CHECKING:
    import click
    import pandas as pd


class OneLineErrors(TyperGroup):
    """The one place where an `OnetLLMError` from any command (a bad flag value, a bad
    environment variable read by `Settings.load`, bad input) becomes one line on stderr and exit
    code 1, so no command can leak a traceback for a user error."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except OnetLLMError as error:
            raise fail(error) from None


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    help="Code job postings to O*NET-SOC occupations (O*NET 30.1).",
)
console = Console()
err_console = Console(stderr=True)

ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="Embedding model: 'default', 'base' or a model folder."),
]
HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Cache folder (default $ONET_LLM_HOME or ~/.cache/onet-llm)."),
]
StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="DuckDB store of runs, LLM calls and reviews "
        "(default $ONET_LLM_STORE or $ONET_LLM_HOME/store.duckdb).",
    ),
]
LlmModelOption = Annotated[
    str | None, typer.Option("--llm-model", help="LLM model name (default $ONET_LLM_MODEL).")
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL)."),
]
ConcurrencyOption = Annotated[
    int | None, typer.Option("--concurrency", help="LLM requests in flight (default 4).")
]


def fail(error: OnetLLMError) -> typer.Exit:
    """One line on stderr, exit code 1: user errors never show a traceback."""
    err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def _rows_per_second(progress: Progress) -> str:
    task = progress.tasks[0]
    return f"{task.speed or 0:,.0f} rows/s"


@app.command()
def label(
    input_path: Annotated[
        Path, typer.Argument(metavar="INPUT", help="Postings: .csv, .parquet or .jsonl")
    ],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Default: INPUT-stem.labels.csv beside the input."),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Labels per posting.")] = 5,
    shortlist_size: Annotated[
        int, typer.Option("--shortlist-size", help="Candidates from the index.")
    ] = 20,
    id_column: Annotated[
        str | None,
        typer.Option("--id-column", help="Default: 'id' if present, else the row number."),
    ] = None,
    title_column: Annotated[str, typer.Option("--title-column")] = "title",
    body_column: Annotated[str, typer.Option("--body-column", help="Optional column.")] = "body",
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", help="Rows read, labelled and committed at a time.")
    ] = 1000,
    skip_bad_rows: Annotated[
        bool,
        typer.Option("--skip-bad-rows", help="Keep going past empty rows (marked source=error)."),
    ] = False,
    model: ModelOption = None,
    store: StoreOption = None,
    home: HomeOption = None,
    llm: Annotated[
        bool, typer.Option("--llm", help="Rerank each shortlist with an LLM (stage 2).")
    ] = False,
    llm_model: LlmModelOption = None,
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,
    max_cost_usd: Annotated[
        float | None,
        typer.Option("--max-cost-usd", help="Stop cleanly before LLM spend passes this."),
    ] = None,
    llm_when: Annotated[
        str | None,
        typer.Option(
            "--llm-when", help="always | uncertain (only rows whose top-1 is not clearly ahead)."
        ),
    ] = None,
    candidate_order: Annotated[
        str | None,
        typer.Option("--candidate-order", help="embedding | shuffle: the order the LLM sees."),
    ] = None,
) -> None:
    """Label each posting with its top K O*NET occupations."""
    from onet_llm.pipeline import LabelOptions, check_input, label_file, open_labeler
    from onet_llm.store import Store

    try:
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
        )
    except OnetLLMError as error:
        raise fail(error) from None
    try:
        options = LabelOptions(
            top_k=top_k,
            shortlist_size=shortlist_size,
            id_column=id_column,
            title_column=title_column,
            body_column=body_column,
            chunk_size=chunk_size,
            skip_bad_rows=skip_bad_rows,
        )
        check_input(input_path, output, options)
        with err_console.status("loading model and index (first run builds the index, ~2 min)"):
            labeler, index_key = open_labeler(settings.embedding_model, settings.index_cache_dir)
        with (
            Store(settings.resolved_store_path) as run_store,
            Progress(
                TextColumn("labelling"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            ) as progress,
        ):
            task = progress.add_task("label", total=None, rate="")

            def on_progress(done: int, total: int | None) -> None:
                progress.update(task, completed=done, total=total, rate=_rows_per_second(progress))

            fingerprint: dict = {"model": labeler.encoder.model_id}
            reranker = None
            if llm:
                from onet_llm.rerank import Reranker

                reranker = Reranker(settings, run_store, labeler.taxonomy)
                fingerprint["llm"] = settings.llm_fingerprint()
            summary = label_file(
                labeler,
                run_store,
                input_path,
                output,
                options,
                fingerprint,
                index_key,
                on_progress,
                reranker,
            )
            llm_ledger = run_store.ledger(summary.run_id) if llm else None
    except OnetLLMError as error:
        raise fail(error) from None
    resumed = f" (resumed after row {summary.resumed_from})" if summary.resumed_from else ""
    console.print(
        f"labelled {summary.rows} rows in {summary.seconds:.1f}s{resumed} -> {summary.output_path}"
    )
    console.print(f"run {summary.run_id}; sources: {summary.sources}")
    if llm_ledger is not None:
        _print_ledger(llm_ledger, title="LLM requests in this run")
    if summary.top_codes:
        table = Table("top-1 code", "occupation", "rows", title="most frequent top-1 labels")
        for code, title, count in summary.top_codes:
            table.add_row(code, title, str(count))
        console.print(table)


@app.command()
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
    from onet_llm.pipeline import open_labeler

    settings = Settings.load(home=home, embedding_model=model)
    try:
        labeler, _ = open_labeler(settings.embedding_model, settings.index_cache_dir)
    except OnetLLMError as error:
        raise fail(error) from None
    shortlist = labeler.shortlist([text], [body], shortlist_size)[0]
    table = Table("#", "O*NET code", "occupation", "score", title=f"shortlist for {text!r}")
    for rank, candidate in enumerate(shortlist, start=1):
        table.add_row(
            str(rank), candidate.onet_code, candidate.onet_title, f"{candidate.score:.3f}"
        )
    console.print(table)


# -- LLM commands (ledger, ...): issue 6 -------------------------------------------------------
@app.command()
def ledger(
    run: Annotated[str | None, typer.Option("--run", help="Only this run id.")] = None,
    store: StoreOption = None,
    home: HomeOption = None,
) -> None:
    """LLM requests by run and model: calls made, cache hits, tokens, cost and latency."""
    from onet_llm.store import Store

    settings = Settings.load(home=home, store_path=store)
    path = settings.resolved_store_path
    try:
        if not path.is_file():
            raise OnetLLMError(f"no store at {path} (nothing has been labelled with it yet)")
        with Store(path) as run_store:
            table = run_store.ledger(run)
    except OnetLLMError as error:
        raise fail(error) from None
    _print_ledger(table, title=f"LLM ledger ({path})")


def _print_ledger(frame: pd.DataFrame, title: str) -> None:
    """One line per run and model (greppable, never truncated by a narrow terminal). Cost says
    'unknown' where a model has no price (set one: see .env.example)."""
    import pandas as pd

    if frame.empty:
        console.print("no LLM requests recorded")
        return
    console.print(title, highlight=False)
    for row in frame.itertuples(index=False):
        cost = row.cost_usd
        cost_text = "unknown (no price for this model)" if pd.isna(cost) else f"${cost:.4f}"
        latency = row.median_latency_s
        latency_text = "-" if pd.isna(latency) else f"{latency:.2f}s"
        console.print(
            f"run {row.run_id} model {row.model}: {row.requests} requests, {row.calls} calls, "
            f"{row.cache_hits} cache hits, {row.failed} failed, {row.http_requests} HTTP "
            f"requests, tokens {row.tokens_in} in / {row.tokens_out} out, cost {cost_text}, "
            f"median latency {latency_text}",
            highlight=False,
            soft_wrap=True,
        )


# -- train command: issue 3 --------------------------------------------------------------------


@app.command()
def train(
    preset: Annotated[
        str, typer.Option("--preset", help="small (<= 15 min on 2 CPU cores) or full.")
    ] = "small",
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            help="Labelled postings (title, body, onet_code[, split]); repeatable. "
            "Default: eval/data/dev_ads.csv. Rows with split=test are never used.",
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for the fine-tuned model.")
    ] = Path("onet-minilm"),
    epochs: Annotated[float | None, typer.Option("--epochs", help="Override the preset.")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Override the preset.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    lora_rank: Annotated[
        int | None,
        typer.Option(
            "--lora-rank",
            help="Train a LoRA adapter of this rank (needs peft) instead of every weight: "
            "a few-MB folder loaded on top of the base model.",
        ),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Fine-tune the embedding model on O*NET titles and labelled postings."""
    from onet_llm.train import TrainingOptions
    from onet_llm.train import train as run_training

    settings = Settings.load(home=home)
    options = TrainingOptions(
        preset=preset,
        data=tuple(data or ()),
        output=output,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        lora_rank=lora_rank,
    )
    try:
        result = run_training(
            options, settings.index_cache_dir, log=lambda line: err_console.print(line)
        )
    except OnetLLMError as error:
        raise fail(error) from None
    best = f"{result.best_score:.3f}" if result.best_score is not None else "n/a"
    console.print(
        f"trained {result.steps} steps in {result.seconds / 60:.1f} min; best validation "
        f"MRR@10 {best} -> {result.output}"
    )
    console.print(f"use it: onet-llm label POSTINGS --model {result.output}")


# -- eval command: issue 4 ---------------------------------------------------------------------


@app.command("eval")
def eval_command(
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="'dev-ads-test' (default), 'reported-titles-test', or a CSV/Parquet/JSONL file "
            "with title, gold onet_code and optional body, id, split columns.",
        ),
    ] = None,
    modes: Annotated[
        str,
        typer.Option("--modes", help="Comma-separated: embedding, hybrid, cascade."),
    ] = "embedding",
    sample: Annotated[
        int | None, typer.Option("--sample", help="Score a seeded random sample of N rows.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample and bootstrap.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report folder (default eval/reports/DATA-MODES-TIME)."),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Keep only rows whose 'split' column is this.")
    ] = None,
    exclude_titles: Annotated[
        bool,
        typer.Option(
            "--exclude-titles",
            help="Leave the evaluated titles out of the index (for held-out taxonomy titles).",
        ),
    ] = False,
    shortlist_size: Annotated[
        int, typer.Option("--shortlist-size", help="Candidates from the index.")
    ] = 20,
    top_k: Annotated[int, typer.Option("--top-k", help="Labels the LLM is asked for.")] = 5,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples.")] = 2000,
    cascade_threshold: Annotated[
        float | None,
        typer.Option(
            "--cascade-threshold",
            help="Top-1 margin below which the cascade asks the LLM (default: the cheapest "
            "within 1 point of the hybrid, chosen on this data).",
        ),
    ] = None,
    note: Annotated[
        str, typer.Option("--note", help="A sentence added to the report (e.g. why a sample).")
    ] = "",
    compare: Annotated[
        tuple[Path, Path] | None,
        typer.Option("--compare", help="Compare two report folders: RUN_A RUN_B (B minus A)."),
    ] = None,
    llm_model: LlmModelOption = None,
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,
    store: StoreOption = None,
    model: ModelOption = None,
    home: HomeOption = None,
) -> None:
    """Score embedding-only, hybrid and cascade labels against gold codes; write a report."""
    from onet_llm import evaluate

    if compare is not None:
        try:
            comparison = evaluate.compare_runs(
                evaluate.load_saved_run(compare[0]),
                evaluate.load_saved_run(compare[1]),
                resamples=resamples,
                seed=seed,
            )
        except OnetLLMError as error:
            raise fail(error) from None
        _print_comparison(comparison)
        return

    from onet_llm.taxonomy import load_taxonomy

    settings = Settings.load(
        home=home,
        embedding_model=model,
        store_path=store,
        llm_model=llm_model,
        openai_base_url=base_url,
        llm_concurrency=concurrency,
    )
    try:
        options = evaluate.EvalOptions(
            modes=evaluate.parse_modes(modes),
            shortlist_size=shortlist_size,
            llm_top_k=top_k,
            resamples=resamples,
            seed=seed,
            cascade_threshold=cascade_threshold,
        )
        taxonomy = load_taxonomy()
        dataset = evaluate.load_dataset(data, taxonomy, sample, seed, split, exclude_titles or None)
        out_dir = out or evaluate.default_report_dir(dataset, options.modes)
        with (
            evaluate.open_llm_stage(settings, options, taxonomy) as (rerank, llm_settings),
            err_console.status("loading model and index") as status,
        ):
            labeler, index_key = evaluate.open_eval_labeler(
                settings.embedding_model,
                settings.index_cache_dir,
                taxonomy,
                dataset.excluded_titles,
            )
            metrics, paths = evaluate.evaluate_to_report(
                dataset,
                labeler,
                index_key,
                options,
                out_dir,
                rerank=rerank,
                llm_settings=llm_settings,
                notes=note,
                on_progress=lambda message: status.update(message),
            )
    except OnetLLMError as error:
        raise fail(error) from None
    _print_eval_summary(metrics, paths)


def _print_eval_summary(metrics: dict, paths: dict[str, Path]) -> None:
    from rich import box

    from onet_llm.eval_report import money, pct, with_interval

    data = metrics["data"]
    table = Table(
        "mode",
        "top-1 [95% CI]",
        "top-5",
        "MRR@10",
        "abstain",
        "cost/1k",
        title=f"{data['name']}: {metrics['rows']} rows, 8-digit O*NET",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        show_edge=False,
        pad_edge=False,
    )
    for mode, result in metrics["modes"].items():
        onet = result["levels"]["onet"]
        llm = result["llm"] or {"cost_per_1000_postings_usd": 0.0}
        table.add_row(
            mode,
            with_interval(onet["top1"]),
            pct(onet["top5"]["value"]),
            pct(onet["mrr10"]["value"]),
            pct(result["abstain_rate"]),
            money(llm["cost_per_1000_postings_usd"]),
        )
    console.print(table)
    recall = metrics["shortlist"]["recall"]["onet"]
    console.print(f"shortlist recall@{metrics['shortlist']['size']}: {with_interval(recall)}")
    console.print(f"report: {paths['markdown']} and {paths['html']}", soft_wrap=True)


def _print_comparison(comparison: dict) -> None:
    from rich import box

    from onet_llm.eval_report import pct, signed

    kind = (
        f"paired bootstrap over the same {comparison['rows_a']} rows"
        if comparison["paired"]
        else f"unpaired bootstrap: the runs scored different rows "
        f"({comparison['rows_a']} vs {comparison['rows_b']})"
    )
    console.print(f"A: {comparison['a']}", highlight=False, soft_wrap=True)
    console.print(f"B: {comparison['b']}", highlight=False, soft_wrap=True)
    console.print(f"B - A with 95% intervals ({kind})", highlight=False, soft_wrap=True)
    table = Table(
        "mode",
        "level",
        "metric",
        "A",
        "B",
        "B - A",
        "95% CI",
        "p",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        show_edge=False,
        pad_edge=False,
    )
    for line in comparison["lines"]:
        interval = (
            f"[{signed(line['low'])}, {signed(line['high'])}]" if line["low"] is not None else ""
        )
        table.add_row(
            line["mode"],
            line["level"],
            line["metric"],
            pct(line["a"]),
            pct(line["b"]),
            signed(line["difference"]),
            interval,
            f"{line['p_value']:.3f}" if line["p_value"] is not None else "",
        )
    console.print(table)
    if not comparison["modes"]:
        console.print("the two runs share no mode")


# -- review commands: issue 5 ------------------------------------------------------------------

review_app = typer.Typer(
    no_args_is_help=False,
    help="Audit a labelling run in the browser; export the decisions.",
)
app.add_typer(review_app, name="review")
RunOption = Annotated[
    str | None, typer.Option("--run", help="Run id (default: the newest run in the store).")
]


@review_app.callback(invoke_without_command=True)
def review(
    context: typer.Context,
    store: StoreOption = None,
    run: RunOption = None,
    port: Annotated[int, typer.Option("--port", help="Port on --host.")] = 8765,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; keep the default loopback.")
    ] = "127.0.0.1",
    reviewer: Annotated[
        str | None, typer.Option("--reviewer", help="Name on decisions (default: login name).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Serve the review page for a labelling run on http://127.0.0.1:PORT/ until Ctrl-C."""
    if context.invoked_subcommand:
        return
    from onet_llm.review_web import ReviewServer, bind, open_review

    settings = Settings.load(home=home, store_path=store)
    try:
        review_context = open_review(settings.resolved_store_path, run, reviewer)
        server = ReviewServer(review_context, bind(host, port))
    except OnetLLMError as error:
        raise fail(error) from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"[bold yellow]warning:[/] listening on {host}: anyone who can reach it can "
            "read the postings and record decisions"
        )
    console.print(
        f"reviewing run {review_context.default_run} in {settings.resolved_store_path}\n"
        f"open {server.url}  (Ctrl-C stops)",
        highlight=False,
        soft_wrap=True,
    )
    server.serve_forever()


@review_app.command("export")
def review_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="corrections .csv, .parquet or .jsonl")],
    store: StoreOption = None,
    run: Annotated[
        str | None, typer.Option("--run", help="Only this run (default: every run).")
    ] = None,
    only_overrides: Annotated[
        bool, typer.Option("--only-overrides", help="Leave out accepted labels.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Write reviewed labels as id,title,body,onet_code (+ provenance) for train/eval --data."""
    from onet_llm.errors import StoreError
    from onet_llm.review import export_decisions
    from onet_llm.store import Store

    settings = Settings.load(home=home, store_path=store)
    try:
        if not settings.resolved_store_path.is_file():
            raise StoreError(f"{settings.resolved_store_path}: no such store (pass --store)")
        with Store(settings.resolved_store_path) as review_store:
            summary = export_decisions(review_store, out, run, only_overrides)
    except OnetLLMError as error:
        raise fail(error) from None
    left_out = f" ({summary.left_out} left out: no title)" if summary.left_out else ""
    console.print(f"exported {summary.rows} reviewed rows -> {out}{left_out}", soft_wrap=True)


@app.command()
def about() -> None:
    """Version, model, data sources and the O*NET attribution."""
    from onet_llm.encoder import resolve_model_path
    from onet_llm.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    console.print(f"onet-llm {__version__}")
    console.print(f"taxonomy: O*NET 30.1, {len(taxonomy)} occupations ({taxonomy.fingerprint})")
    console.print(f"default embedding model: {resolve_model_path('default')}")
    console.print(ONET_ATTRIBUTION, highlight=False)


def version_callback(value: bool) -> None:
    if value:
        console.print(f"onet-llm {__version__}")
        console.print(ONET_ATTRIBUTION, highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True)
    ] = False,
) -> None:
    """Code job postings to O*NET-SOC occupations (O*NET 30.1)."""


if __name__ == "__main__":
    app()
