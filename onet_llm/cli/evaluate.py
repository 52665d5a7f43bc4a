"""`onet-llm eval`: score the modes against gold codes and write a report, or compare two."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from onet_llm.cli.choices import value
from onet_llm.cli.common import (
    BaseUrlOption,
    ConcurrencyOption,
    EncoderBackendOption,
    FusionOption,
    HomeOption,
    InferExamplesOption,
    LlmModelOption,
    ModelOption,
    ShortlistSizeOption,
    StoreOption,
    console,
    err_console,
)
from onet_llm.settings import Settings

DataOption = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="'dev-ads-test' (default; 32 occupations), 'dev-ads-validation', "
        "'reported-titles-test', "
        "'reported-titles-validation', 'titles-as-written-test', "
        "'titles-as-written-validation' (all occupations, held out), or a CSV/Parquet/JSONL "
        "file with title, gold onet_code and optional body, id, split columns.",
    ),
]
ModesOption = Annotated[
    str,
    typer.Option(
        "--modes",
        help="Comma-separated: embedding, fused (infer + retrieve), hybrid (rerank), "
        "infer-hybrid (infer + retrieve + rerank), cascade.",
    ),
]
SampleOption = Annotated[
    int | None, typer.Option("--sample", help="Score a seeded random sample of N rows.")
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the sample and bootstrap.")]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="Report folder (default eval/reports/DATA-MODES-TIME)."),
]
SplitOption = Annotated[
    str | None, typer.Option("--split", help="Keep only rows whose 'split' column is this.")
]
ExcludeTitlesOption = Annotated[
    bool,
    typer.Option(
        "--exclude-titles",
        help="Leave the evaluated titles out of the index (for held-out taxonomy titles).",
    ),
]
RepresentationOption = Annotated[
    str | None,
    typer.Option(
        "--representation",
        help="Index representation to evaluate (default: the product's, fusion); "
        "e.g. title_blend, alternate_max.",
    ),
]
TopKOption = Annotated[int, typer.Option("--top-k", help="Labels the LLM is asked for.")]
ResamplesOption = Annotated[int, typer.Option("--resamples", help="Bootstrap resamples.")]
CascadeThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--cascade-threshold",
        help="Top-1 margin below which the cascade asks the LLM (default: the cheapest "
        "within 1 point of the hybrid, chosen on this data).",
    ),
]
NoteOption = Annotated[
    str, typer.Option("--note", help="A sentence added to the report (e.g. why a sample).")
]
CompareOption = Annotated[
    tuple[Path, Path] | None,
    typer.Option("--compare", help="Compare two report folders: RUN_A RUN_B (B minus A)."),
]


def eval_command(
    data: DataOption = None,
    modes: ModesOption = "embedding",
    sample: SampleOption = None,
    seed: SeedOption = 0,
    out: OutOption = None,
    split: SplitOption = None,
    exclude_titles: ExcludeTitlesOption = False,
    shortlist_size: ShortlistSizeOption = 20,
    representation: RepresentationOption = None,
    top_k: TopKOption = 5,
    resamples: ResamplesOption = 2000,
    cascade_threshold: CascadeThresholdOption = None,
    note: NoteOption = "",
    compare: CompareOption = None,
    llm_model: LlmModelOption = None,
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,
    fusion: FusionOption = None,
    infer_examples: InferExamplesOption = None,
    store: StoreOption = None,
    model: ModelOption = None,
    encoder_backend: EncoderBackendOption = None,
    home: HomeOption = None,
) -> None:
    """Score embedding-only, hybrid and cascade labels against gold codes; write a report."""
    from onet_llm.eval.compare import compare_runs, load_saved_run
    from onet_llm.eval.datasets import load_dataset
    from onet_llm.eval.modes import EvalOptions, parse_modes
    from onet_llm.taxonomy import load_taxonomy

    if compare is not None:
        runs = load_saved_run(compare[0]), load_saved_run(compare[1])
        print_comparison(compare_runs(*runs, resamples=resamples, seed=seed))
        return
    settings = Settings.load(
        home=home,
        embedding_model=model,
        encoder_backend=value(encoder_backend),
        store_path=store,
        llm_model=llm_model,
        openai_base_url=base_url,
        llm_concurrency=concurrency,
        fusion=fusion,
        infer_examples=infer_examples,
    )
    options = EvalOptions(
        modes=parse_modes(modes),
        shortlist_size=shortlist_size,
        llm_top_k=top_k,
        resamples=resamples,
        seed=seed,
        cascade_threshold=cascade_threshold,
    )
    taxonomy = load_taxonomy()
    dataset = load_dataset(data, taxonomy, sample, seed, split, exclude_titles or None)
    metrics, paths = run_eval(settings, options, taxonomy, dataset, out, note, representation)
    record_guard(settings, metrics, paths)
    print_eval_summary(metrics, paths)


def record_guard(settings: Settings, metrics: dict, paths: dict[str, Path]) -> None:
    """Keep the LLM modes' top-1 against embedding-only in the store, for `label`'s warning."""
    from onet_llm.eval.guard import eval_result_rows
    from onet_llm.store import Store

    rows = eval_result_rows(metrics, str(paths.get("markdown", "")))
    if rows:
        with Store(settings.resolved_store_path) as store:
            store.record_eval(rows)


def run_eval(
    settings: Settings,
    options,
    taxonomy,
    dataset,
    out: Path | None,
    note: str,
    representation: str | None = None,
):
    """Open the LLM stage (when a mode needs it) and the labeler, and write the report."""
    from onet_llm.cli.progress import export_encoder_now
    from onet_llm.eval.evaluate import default_report_dir, evaluate_to_report, open_eval_labeler
    from onet_llm.eval.llm_stage import open_llm_stage
    from onet_llm.eval.modes import INFER_MODES

    out_dir = out or default_report_dir(dataset, options.modes)
    with (
        open_llm_stage(settings, options, taxonomy) as (rerank, infer_factory, llm_settings),
        err_console.status("loading model and index") as status,
    ):
        labeler, index_key = open_eval_labeler(
            settings.embedding_model,
            settings.index_cache_dir,
            taxonomy,
            dataset.excluded_titles,
            settings.encoder_options(),
            representation,
        )
        export_encoder_now(labeler.encoder, status.update)
        infer = None
        if infer_factory is not None and INFER_MODES & set(options.modes):
            status.update("loading the infer examples (first run encodes them, a few minutes)")
            infer = infer_factory(labeler, dataset.excluded_titles)
        return evaluate_to_report(
            dataset,
            labeler,
            index_key,
            options,
            out_dir,
            rerank=rerank,
            llm_settings=llm_settings,
            notes=note,
            on_progress=lambda message: status.update(message),
            infer=infer,
        )


def print_eval_summary(metrics: dict, paths: dict[str, Path]) -> None:
    from rich import box

    from onet_llm.eval.document import money, pct, with_interval

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
    fused = metrics["shortlist"].get("fused")
    if fused:
        difference = fused["difference"]["onet"]
        console.print(
            f"fused shortlist recall@{metrics['shortlist']['size']}: "
            f"{with_interval(fused['recall']['onet'])}, {difference['difference'] * 100:+.1f} "
            f"points [{difference['low'] * 100:+.1f}, {difference['high'] * 100:+.1f}] "
            "against the embedding's own"
        )
    console.print(f"report: {paths['markdown']} and {paths['html']}", soft_wrap=True)


def print_comparison(comparison: dict) -> None:
    from rich import box

    from onet_llm.eval.document import pct, signed

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
