"""`onet-llm review` (serve the audit page) and `onet-llm review export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onet_llm.cli.common import HomeOption, OnetLLMGroup, StoreOption, console, err_console
from onet_llm.settings import Settings

review_app = typer.Typer(
    cls=OnetLLMGroup,
    no_args_is_help=False,
    help="Audit a labelling run in the browser; export the decisions.",
)
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
    from onet_llm.review.guards import LOOPBACK_HOSTS
    from onet_llm.review.server import ReviewServer, bind, open_review, plain_host

    settings = Settings.load(home=home, store_path=store)
    review_context = open_review(settings.resolved_store_path, run, reviewer)
    server = ReviewServer(review_context, bind(host, port))
    if plain_host(host) not in LOOPBACK_HOSTS:
        err_console.print(
            f"[bold yellow]warning:[/] listening on {host}: the page has no login, so anyone "
            "who can reach it can read the postings and record decisions",
            highlight=False,
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
    from onet_llm.review.export import export_decisions
    from onet_llm.store import Store

    settings = Settings.load(home=home, store_path=store)
    if not settings.resolved_store_path.is_file():
        raise StoreError(f"{settings.resolved_store_path}: no such store (pass --store)")
    with Store(settings.resolved_store_path) as review_store:
        summary = export_decisions(review_store, out, run, only_overrides)
    left_out = f" ({summary.left_out} left out: no title)" if summary.left_out else ""
    if summary.unsettled:
        left_out += f" ({summary.unsettled} left out: reviewers disagree, not adjudicated)"
    console.print(f"exported {summary.rows} reviewed rows -> {out}{left_out}", soft_wrap=True)


def _open_store(store: Path | None, home: Path | None):
    from onet_llm.errors import StoreError
    from onet_llm.store import Store

    settings = Settings.load(home=home, store_path=store)
    if not settings.resolved_store_path.is_file():
        raise StoreError(f"{settings.resolved_store_path}: no such store (pass --store)")
    return Store(settings.resolved_store_path)


@review_app.command("assign")
def review_assign(
    reviewers: Annotated[
        str, typer.Option("--reviewers", help="Comma-separated reviewer names, e.g. ana,ben.")
    ],
    run: RunOption = None,
    overlap: Annotated[
        float, typer.Option("--overlap", help="Share of rows two reviewers both see (0-1).")
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split.")] = 0,
    sample: Annotated[
        bool, typer.Option("--sample", help="Split the run's newest audit sample, not all rows.")
    ] = False,
    store: StoreOption = None,
    home: HomeOption = None,
) -> None:
    """Split a run (or its audit sample) into per-reviewer queues with an overlap share."""
    from onet_llm.review.queries import resolve_run
    from onet_llm.review.queues import assign_queues, parse_reviewers

    names = parse_reviewers(reviewers)
    with _open_store(store, home) as review_store:
        run_id = resolve_run(review_store, run).run_id
        assignment = assign_queues(review_store, run_id, names, overlap, seed, sample)
    queues = ", ".join(f"{name} {rows}" for name, rows in assignment.queues.items())
    console.print(
        f"run {run_id}: {assignment.rows} rows into {len(names)} queues ({queues}); "
        f"{assignment.overlap_rows} rows seen by two reviewers",
        highlight=False,
        soft_wrap=True,
    )


@review_app.command("sample")
def review_sample(
    n: Annotated[int, typer.Option("--n", help="Rows to draw.")] = 200,
    run: RunOption = None,
    stratify: Annotated[
        str, typer.Option("--stratify", help="none, confidence (low vs rest) or source.")
    ] = "none",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draw.")] = 0,
    store: StoreOption = None,
    home: HomeOption = None,
) -> None:
    """Draw a seeded audit sample; the page estimates the run's accuracy from its reviews."""
    from onet_llm.review.queries import resolve_run
    from onet_llm.review.sampling import draw_sample

    with _open_store(store, home) as review_store:
        run_id = resolve_run(review_store, run).run_id
        summary = draw_sample(review_store, run_id, n, stratify, seed)
    strata = ", ".join(f"{name} {drawn}/{rows}" for name, (rows, drawn) in summary.strata.items())
    console.print(
        f"run {run_id}: sample {summary.sample_id} of {summary.rows} rows (seed {seed}; {strata})",
        highlight=False,
        soft_wrap=True,
    )
