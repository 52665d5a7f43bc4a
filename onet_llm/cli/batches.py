"""`onet-llm batches`: the Batch API batches label runs submitted (`--llm-mode batch`), and
`--cancel ID` to stop one; plus the progress lines a batch run prints while it waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from onet_llm.cli.common import BaseUrlOption, HomeOption, StoreOption, console, err_console
from onet_llm.errors import InputError, StoreError
from onet_llm.settings import Settings

if TYPE_CHECKING:
    from onet_llm.rerank.batch_runner import BatchProgress

# While a batch runs: a line when anything changes, else one every this many seconds.
QUIET_SECONDS = 300.0


def batches(
    cancel: Annotated[
        str | None, typer.Option("--cancel", help="Cancel this batch (its id or key).")
    ] = None,
    store: StoreOption = None,
    home: HomeOption = None,
    base_url: BaseUrlOption = None,
) -> None:
    """Batch API batches in the store: status, request counts, cost."""
    from onet_llm.store import Store

    settings = Settings.load(home=home, store_path=store, openai_base_url=base_url)
    path = settings.resolved_store_path
    if not path.is_file():
        raise StoreError(f"no store at {path} (nothing has been labelled with it yet)")
    with Store(path) as batch_store:
        if cancel is not None:
            cancel_batch(settings, batch_store, cancel)
            return
        listed = batch_store.batches()
    if not listed:
        console.print("no batches recorded")
        return
    for batch in listed:
        console.print(batch_line(batch), highlight=False, soft_wrap=True)


def batch_line(batch: dict) -> str:
    """One batch on one line (greppable, never truncated)."""
    cost = batch["cost_usd"]
    cost_text = "-" if cost is None else f"${cost:.4f}"
    answered = "-" if batch["answered"] is None else str(batch["answered"])
    return (
        f"{batch['batch_id'] or '(not created)'} key {batch['batch_key'][:12]} run "
        f"{batch['run_id'] or '-'} model {batch['model']}: {batch['status']}, "
        f"{batch['requests']} requests, {batch['completed'] or 0} done, "
        f"{batch['failed'] or 0} failed, {answered} answered, cost {cost_text}, "
        f"created {batch['created_at']:%Y-%m-%d %H:%M}"
    )


def cancel_batch(settings: Settings, batch_store, wanted: str) -> None:
    from onet_llm.rerank.batch_runner import BatchRunner
    from onet_llm.rerank.cost import Prices

    batch = batch_store.find_batch(wanted)
    if batch is None:
        raise InputError(f"no batch {wanted!r} in the store (see `onet-llm batches`)")
    status = BatchRunner(settings, batch_store, Prices(settings)).cancel(batch)
    console.print(
        f"batch {batch['batch_id'] or batch['batch_key']}: {status}; the next run of its "
        "label command reads what was answered and asks the rest in sync",
        highlight=False,
    )


def progress_printer() -> Callable[[BatchProgress], None]:
    """Dated lines on stderr while a run waits for its batches."""
    last = {"text": "", "time": 0.0}

    def show(progress: BatchProgress) -> None:
        states = ", ".join(f"{n} {state}" for state, n in sorted(progress.states.items()))
        text = (
            f"batches: {states}; {progress.done:,}/{progress.requests:,} requests done, "
            f"{progress.failed:,} failed"
        )
        now = time.monotonic()
        if text == last["text"] and now - last["time"] < QUIET_SECONDS:
            return
        last.update(text=text, time=now)
        minutes, seconds = divmod(int(progress.elapsed_s), 60)
        hours, minutes = divmod(minutes, 60)
        err_console.print(
            f"{text}, {hours}:{minutes:02d}:{seconds:02d} elapsed", highlight=False, soft_wrap=True
        )

    return show
