"""Progress on stderr: a bar with an ETA on a terminal, plain dated lines otherwise (a log file,
CI, a pipe), so a long step is never silent."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from onet_llm.cli.common import err_console

Progress = Callable[[int, int | None], None]
# Not on a terminal: one line per this share of the work, or per this many seconds.
PLAIN_STEP = 0.1
PLAIN_SECONDS = 30.0


def _eta(started: float, done: int, total: int) -> str:
    if done <= 0:
        return "?"
    remaining = (time.perf_counter() - started) / done * (total - done)
    minutes, seconds = divmod(int(remaining), 60)
    return f"{minutes}m{seconds:02d}s"


@contextmanager
def plain_progress(what: str, unit: str) -> Iterator[Progress]:
    """Lines such as `building the occupation index: 12,288/61,474 titles (20%), ETA 3m10s`."""
    started = time.perf_counter()
    last = {"share": -1.0, "time": started}

    def on_progress(done: int, total: int | None) -> None:
        if done == 0:
            return  # nothing to say yet (and a run that fails at once says only why)
        now = time.perf_counter()
        share = done / total if total else 0.0
        finished = total is not None and done >= total
        recent = share - last["share"] < PLAIN_STEP and now - last["time"] < PLAIN_SECONDS
        if recent and not finished:
            return
        last.update(share=share, time=now)
        of = f"/{total:,} {unit} ({share:.0%}), ETA {_eta(started, done, total)}" if total else ""
        err_console.print(f"{what}: {done:,}{of or ' ' + unit}", highlight=False, soft_wrap=True)

    yield on_progress


@contextmanager
def progress_bar(
    what: str, unit: str, transient: bool = True, plain: bool = True
) -> Iterator[Progress]:
    """A rich bar with count, rate and ETA on a terminal; `plain_progress` lines otherwise
    (nothing with `plain=False`: labelling, whose summary follows at once)."""
    if not err_console.is_terminal:
        if not plain:
            yield lambda done, total: None
            return
        with plain_progress(what, unit) as on_progress:
            yield on_progress
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    with RichProgress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    ) as progress:
        task = progress.add_task(what, total=None, rate="")

        def on_progress(done: int, total: int | None) -> None:
            rate = f"{progress.tasks[0].speed or 0:,.0f} {unit}/s"
            progress.update(task, completed=done, total=total, rate=rate)

        yield on_progress


def export_encoder_now(encoder, say: Callable[[str], None]) -> None:
    """Make the first-use ONNX export (about 6 s for the shipped model) happen now, under a
    notice, rather than inside the first batch: otherwise the first run pauses without a word
    and reports the export as labelling time."""
    if encoder.export_pending:
        say(
            f"exporting the model to ONNX for the {encoder.backend} encoder backend "
            "(once per model, a few seconds)"
        )
        encoder.encoding_model  # noqa: B018 - loading it is the export
