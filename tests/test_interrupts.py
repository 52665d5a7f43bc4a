"""A Ctrl-C that lands inside a finaliser is swallowed by Python; the watch still stops the run."""

from __future__ import annotations

import gc
import signal

import pytest

from onet_llm.interrupts import raise_if_interrupted, watching_interrupts


class InterruptsWhenCollected:
    """Its finaliser receives SIGINT: the KeyboardInterrupt raised there is "ignored"."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)


def swallow_an_interrupt() -> None:
    InterruptsWhenCollected()  # collected at once: the interrupt is raised in __del__
    gc.collect()


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def ctrl_c_enabled():
    """Python's own SIGINT handler for the test, as in a terminal. A test run started in the
    background (`make test &`) inherits SIGINT ignored, and then no Ctrl-C reaches anything."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c_enabled_in_child() -> None:
    """`preexec_fn` of a child that must see Ctrl-C even when the tests run in the background:
    SIGINT back to its default, so the child's Python installs its handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_without_the_watch_an_interrupt_in_a_finaliser_is_lost():
    swallow_an_interrupt()  # returns: Python printed "Exception ignored" and carried on
    raise_if_interrupted()


def test_an_interrupt_swallowed_by_a_finaliser_is_raised_at_the_next_check():
    with watching_interrupts():
        swallow_an_interrupt()  # without the watch the run would carry on from here
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
    raise_if_interrupted()  # the watch is over: nothing pending, and the default handler back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_a_watch_nothing_is_remembered():
    raise_if_interrupted()
    with watching_interrupts():
        raise_if_interrupted()  # no SIGINT yet: carries on


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job
    try:
        with watching_interrupts():
            signal.raise_signal(signal.SIGINT)
            raise_if_interrupted()
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
