"""The worker pool both LLM stages share: `llm_concurrency` threads, results in input order.

The first error stops new work (requests in flight finish and get recorded) and is raised once
every worker is done; Ctrl-C starts nothing new. The store serialises the workers' writes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from onet_llm.interrupts import raise_if_interrupted

Item = TypeVar("Item")
Result = TypeVar("Result")


def run_workers(
    items: Sequence[Item],
    work: Callable[[Item], Result],
    workers: int,
    prefix: str = "llm",
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """`work(item)` for every item on `workers` threads; one result per item, in order."""
    stop = threading.Event()

    def guarded(item: Item) -> Result | None:
        if stop.is_set():
            return None
        raise_if_interrupted()  # no new request after a Ctrl-C, even one that was swallowed
        try:
            result = work(item)
        except Exception:
            stop.set()
            raise
        if on_result is not None:
            on_result(result)
        return result

    workers = max(1, workers)
    if workers == 1 or len(items) <= 1:
        return [guarded(item) for item in items]  # type: ignore[misc]
    results: list[Result | None] = []
    first_error: Exception | None = None
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=prefix)
    try:
        futures = [pool.submit(guarded, item) for item in items]
        for future in futures:
            try:
                results.append(future.result())
            except Exception as error:  # keep collecting: in-flight calls get recorded
                first_error = first_error or error
                results.append(None)
    except BaseException:  # Ctrl-C: start nothing new; requests in flight finish
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if first_error is not None:
        raise first_error
    return results  # type: ignore[return-value]
