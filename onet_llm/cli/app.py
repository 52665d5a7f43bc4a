"""The `onet-llm` command line. Thin: it only puts the commands together; each command's module
parses its options, builds settings and calls the library, and `common.OnetLLMGroup` turns
every `OnetLLMError` into a one-line message and exit code 1."""

from __future__ import annotations

from typing import Annotated

import typer

from onet_llm import ONET_ATTRIBUTION, __version__
from onet_llm.cli import batches, evaluate, label, llm, records, review, train
from onet_llm.cli.common import CONTEXT_SETTINGS, OnetLLMGroup, console

app = typer.Typer(
    cls=OnetLLMGroup,
    add_completion=True,
    no_args_is_help=True,
    context_settings=CONTEXT_SETTINGS,
    help="Code job postings to O*NET-SOC occupations (O*NET 30.1).",
)
app.command()(label.label)
app.command()(label.search)
app.command()(llm.ledger)
app.command()(batches.batches)
app.command()(records.runs)
app.command()(records.logs)
app.command()(train.train)
app.command("eval")(evaluate.eval_command)
app.add_typer(review.review_app, name="review")


@app.command()
def about() -> None:
    """Version, model, data sources and the O*NET attribution."""
    from onet_llm.shortlist.encoder import resolve_model_path
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
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Version and exit."
        ),
    ] = False,
) -> None:
    """Code job postings to O*NET-SOC occupations (O*NET 30.1)."""


if __name__ == "__main__":
    app()
