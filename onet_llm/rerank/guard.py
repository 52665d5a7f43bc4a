"""A run whose endpoint never works stops instead of falling back row after row.

Falling back is right for one bad request; for an unreachable server, a refused key behind a
proxy, or a quota that is spent, every row would fall back and the run would end "successfully"
with no LLM labels at all. The guard watches the first calls of a run: when the first N all fail
for transport reasons (connection, 429s or 5xx past their retries, time-outs), it stops the run
with one line. Once any call has succeeded, failures are single rows again, counted and
reported at the end of the run.
"""

from __future__ import annotations

import threading

from onet_llm.errors import LLMError
from onet_llm.types import RerankResult

REQUEST_FAILED = "LLM request failed"


class EndpointGuard:
    """`record(result)` after each call; raises LLMError on the N-th failure in a row at the
    start of a run. `limit` 0 never stops."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failures: list[str] = []
        self.succeeded = False
        self._lock = threading.Lock()

    def record(self, result: RerankResult) -> None:
        with self._lock:
            if result.source == "llm":
                self.succeeded = True
                return
            error = result.error or ""
            if self.succeeded or not self.limit or not error.startswith(REQUEST_FAILED):
                return
            self.failures.append(error.removeprefix(REQUEST_FAILED).lstrip(": "))
            if len(self.failures) >= self.limit:
                raise LLMError(
                    f"the first {self.limit} LLM requests all failed (last: {self.failures[-1]}); "
                    "check --base-url, the key and the server. Rows labelled so far are kept: "
                    "run the same command again to resume (ONET_LLM_FAIL_FAST_AFTER=0 falls "
                    "back row by row instead)"
                )
