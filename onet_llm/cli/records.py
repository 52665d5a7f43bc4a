"""`onet-llm runs` and `onet-llm logs`: what was labelled, and every LLM call it made, read back
from the store (in the manner of simonw/llm's `llm logs`). Both open the store read-only and
wait briefly while a `label` run commits, so they work during a run."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from onet_llm.cli.common import HomeOption, StoreOption, console
from onet_llm.errors import StoreError
from onet_llm.settings import Settings

JsonOption = Annotated[bool, typer.Option("--json", help="JSON on stdout instead of text.")]
LimitOption = Annotated[int, typer.Option("--limit", "-n", help="Newest N (0: all).", min=0)]


def open_reader(store, home):
    from onet_llm.store import Store

    settings = Settings.load(home=home, store_path=store)
    path = settings.resolved_store_path
    if not path.is_file():
        raise StoreError(f"no store at {path} (nothing has been labelled with it yet)")
    return Store(path, read_only=True)


def _plain(value: Any) -> Any:
    """JSON-friendly values of a DataFrame cell: timestamps as ISO text, NaN as null."""
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def records(frame) -> list[dict[str, Any]]:
    return [
        {key: _plain(value) for key, value in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def runs(
    limit: LimitOption = 20,
    json_output: JsonOption = False,
    store: StoreOption = None,
    home: HomeOption = None,
) -> None:
    """Labelling runs, newest first: status, input, rows, sources, model."""
    with open_reader(store, home) as reader:
        table = records(reader.run_overview(limit or None))
    for run in table:
        run["sources"] = json.loads(run["sources"] or "{}")
    if json_output:
        sys.stdout.write(json.dumps(table, indent=2) + "\n")
        return
    if not table:
        console.print("no runs recorded")
    for run in table:
        sources = ", ".join(f"{name} {count}" for name, count in run["sources"].items())
        console.print(
            f"{run['run_id']}  {run['status']:<7}  {run['rows_done']} rows ({sources or 'none'})"
            f"  {run['input_path']} -> {run['output_path']}  model {run['model_id']}"
            f"  started {str(run['started_at'])[:19]}",
            highlight=False,
            soft_wrap=True,
        )


def logs(
    run: Annotated[str | None, typer.Option("--run", help="Only this run id.")] = None,
    limit: LimitOption = 10,
    json_output: JsonOption = False,
    store: StoreOption = None,
    home: HomeOption = None,
) -> None:
    """LLM calls, newest first: prompt, response, tokens, cost, latency and status."""
    with open_reader(store, home) as reader:
        calls = records(reader.call_history(run, limit or None))
    for call in calls:
        call["request"] = json.loads(call["request"]) if call["request"] else None
    if json_output:
        sys.stdout.write(json.dumps(calls, indent=2) + "\n")
        return
    if not calls:
        console.print("no LLM calls recorded" + (f" for run {run}" if run else ""))
    for call in calls:
        print_call(call)


def print_call(call: dict[str, Any]) -> None:
    cost = "unknown" if call["cost_usd"] is None else f"${call['cost_usd']:.5f}"
    latency = "-" if call["latency_s"] is None else f"{call['latency_s']:.2f}s"
    cached = " (cache hit)" if call["cached"] else ""
    console.rule(f"{str(call['created_at'])[:19]}  run {call['run_id']}", style="dim")
    console.print(
        f"model {call['model']}: {call['status']}{cached}, tokens {call['tokens_in']} in / "
        f"{call['tokens_out']} out, cost {cost}, latency {latency}, "
        f"{call['attempts']} HTTP requests",
        highlight=False,
        soft_wrap=True,
    )
    if call["error"]:
        console.print(f"error: {call['error']}", highlight=False, soft_wrap=True)
    for message in (call["request"] or {}).get("messages", []):
        console.print(f"[bold]{message.get('role')}[/]:", highlight=False)
        console.print(str(message.get("content")), highlight=False, markup=False, soft_wrap=True)
    console.print("[bold]response[/]:", highlight=False)
    console.print(call["response_raw"] or "(none)", highlight=False, markup=False, soft_wrap=True)
