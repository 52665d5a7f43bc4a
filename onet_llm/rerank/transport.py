"""Transport retries: timeouts, connection errors and 5xx go through tenacity with exponential
backoff and jitter; 429s have their own, larger budget and honour `Retry-After`."""

from __future__ import annotations

import openai
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from onet_llm.settings import Settings

RETRY_AFTER_CAP_S = 300.0


def is_transient(error: BaseException) -> bool:
    if isinstance(error, openai.APITimeoutError | openai.APIConnectionError):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    return False


def retry_after_seconds(error: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After / retry-after-ms), if it said."""
    response = getattr(error, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return min(float(headers["retry-after-ms"]) / 1000, RETRY_AFTER_CAP_S)
        if "retry-after" in headers:
            return min(max(float(headers["retry-after"]), 0.0), RETRY_AFTER_CAP_S)
    except ValueError:  # an HTTP date: fall back to exponential backoff
        return None
    return None


class TransportPolicy:
    """Two budgets: `max_retries` for timeouts, connection errors and 5xx; `rate_limit_retries`
    for 429s, which wait as long as Retry-After says (else backoff)."""

    def __init__(self, settings: Settings) -> None:
        self.max_retries = settings.llm_max_retries
        self.rate_limit_retries = settings.llm_rate_limit_retries
        self.backoff = wait_exponential_jitter(
            multiplier=settings.llm_backoff_initial_s, max=settings.llm_backoff_max_s
        )

    def retrying(self, retries: dict[str, int]) -> Retrying:
        """A fresh Retrying for one logical request; `retries` counts the retries made, by
        kind ('transport', 'rate_limit')."""
        failures = {"transport": 0, "rate_limit": 0}

        def kind_of(state: RetryCallState) -> str:
            error = state.outcome.exception() if state.outcome else None
            return "rate_limit" if isinstance(error, openai.RateLimitError) else "transport"

        def stop(state: RetryCallState) -> bool:
            kind = kind_of(state)
            failures[kind] += 1
            budget = self.rate_limit_retries if kind == "rate_limit" else self.max_retries
            return failures[kind] > budget

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, openai.RateLimitError):
                asked = retry_after_seconds(error)
                if asked is not None:
                    return asked
            return self.backoff(state)

        def before_sleep(state: RetryCallState) -> None:
            retries[kind_of(state)] += 1

        return Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop,
            wait=wait,
            before_sleep=before_sleep,
            reraise=True,
        )
