"""Ctrl-C that a run cannot lose.

Python turns SIGINT into KeyboardInterrupt wherever the main thread happens to be. When that
is inside a finaliser (`__del__`, a weakref callback, a generator being closed) the
interpreter prints "Exception ignored" and carries on, so a run that was told to stop would
finish instead, and exit 0. While `watching_interrupts` is active, SIGINT also sets a flag,
and the labelling loop calls `raise_if_interrupted` before each commit: an interrupt that was
swallowed still stops the run at its next commit point, with the usual "interrupted" message.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_requested = threading.Event()


@contextmanager
def watching_interrupts() -> Iterator[None]:
    """Within the block SIGINT raises KeyboardInterrupt, as by default, and is remembered.

    Does nothing off the main thread (where handlers cannot be set) or where SIGINT already
    has a handler other than Python's default (ignored in a background job, or a host's own),
    so that it never changes what Ctrl-C does, only that it is not forgotten."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        _requested.set()
        raise KeyboardInterrupt

    _requested.clear()
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _requested.clear()


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if SIGINT arrived inside the watch, even if it was swallowed."""
    if _requested.is_set():
        raise KeyboardInterrupt
