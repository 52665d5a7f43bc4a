"""What every command shares: the consoles, the common options, and the one place that turns
an `OnetLLMError` into a one-line message and exit code 1 (`OnetLLMGroup`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from typer.core import TyperGroup, TyperOption

from onet_llm.cli.choices import EncoderBackend
from onet_llm.errors import OnetLLMError

if TYPE_CHECKING:
    import pandas as pd

console = Console()
err_console = Console(stderr=True)
# `-h` as well as `--help`, on every command.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
_option_type = TyperOption.display_type_rich


def _flag_type(self: TyperOption, ctx: click.Context) -> str | None:
    """No `<bool>` beside a flag in --help (typer shows one for every flag, --help included):
    a flag takes no value."""
    return None if getattr(self, "is_flag", False) else _option_type(self, ctx)


TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="Embedding model: 'default', 'base' or a model folder."),
]
EncoderBackendOption = Annotated[
    EncoderBackend | None,
    typer.Option(
        "--encoder-backend",
        help="How the embedding model runs: auto (onnx where it can run, else torch), torch, "
        "onnx (fp32: torch's vectors, faster) or onnx-int8 (approximate, fastest). "
        "Default $ONET_LLM_ENCODER_BACKEND or auto.",
    ),
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
LlmStagesOption = Annotated[
    str | None,
    typer.Option(
        "--llm-stages",
        help="rerank (default) | infer,rerank: the LLM first names the occupation, its words "
        "are searched in the index and fused with the shortlist, then the rerank.",
    ),
]
FusionOption = Annotated[
    str | None,
    typer.Option("--fusion", help="reserve | rrf | union: how inferred shortlists are fused."),
]
InferExamplesOption = Annotated[
    int | None,
    typer.Option("--infer-examples", help="Nearest O*NET titles shown in the infer prompt."),
]
ShortlistSizeOption = Annotated[
    int, typer.Option("--shortlist-size", help="Candidates from the index.")
]


def fail(error: OnetLLMError) -> typer.Exit:
    """One line on stderr, exit code 1 (130 for Ctrl-C): user errors never show a traceback."""
    err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    return typer.Exit(code=error.exit_code)


class OnetLLMGroup(TyperGroup):
    """The command group of the app: any `OnetLLMError` a command raises, at any depth of
    sub-commands, ends as one line and exit code 1. Anything else is a bug and keeps its
    traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OnetLLMError as error:
            raise fail(error) from None


def counted(count: float, noun: str) -> str:
    """'1 call', '3 calls': counts as integers, with the noun agreeing."""
    count = int(count)
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def print_ledger(frame: pd.DataFrame, title: str, out: Console = console) -> None:
    """One line per run and model (greppable, never truncated by a narrow terminal). Cost says
    'unknown' where a model has no price (set one: see .env.example)."""
    import pandas as pd

    if frame.empty:
        out.print("no LLM requests recorded")
        return
    out.print(title, highlight=False)
    for row in frame.itertuples(index=False):
        cost = row.cost_usd
        cost_text = "unknown (no price for this model)" if pd.isna(cost) else f"${cost:.4f}"
        latency = row.median_latency_s
        latency_text = "-" if pd.isna(latency) else f"{latency:.2f}s"
        cached = int(getattr(row, "cached_tokens", 0) or 0)
        cached_text = f" ({cached} cached)" if cached else ""
        batch = int(getattr(row, "batch_calls", 0) or 0)
        batch_text = f" ({batch} through the Batch API)" if batch else ""
        out.print(
            f"run {row.run_id} model {row.model}: {counted(row.requests, 'request')}, "
            f"{counted(row.calls, 'call')}{batch_text}, {counted(row.cache_hits, 'cache hit')}, "
            f"{int(row.failed)} failed, {counted(row.http_requests, 'HTTP request')}, "
            f"tokens {int(row.tokens_in)} in{cached_text} / {int(row.tokens_out)} out, "
            f"cost {cost_text}, "
            f"median latency {latency_text}",
            highlight=False,
            soft_wrap=True,
        )
