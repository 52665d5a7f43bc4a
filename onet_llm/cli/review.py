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
    from onet_llm.review.web import ReviewServer, bind, open_review

    settings = Settings.load(home=home, store_path=store)
    review_context = open_review(settings.resolved_store_path, run, reviewer)
    server = ReviewServer(review_context, bind(host, port))
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
    from onet_llm.review.decisions import export_decisions
    from onet_llm.store import Store

    settings = Settings.load(home=home, store_path=store)
    if not settings.resolved_store_path.is_file():
        raise StoreError(f"{settings.resolved_store_path}: no such store (pass --store)")
    with Store(settings.resolved_store_path) as review_store:
        summary = export_decisions(review_store, out, run, only_overrides)
    left_out = f" ({summary.left_out} left out: no title)" if summary.left_out else ""
    console.print(f"exported {summary.rows} reviewed rows -> {out}{left_out}", soft_wrap=True)
