"""`--llm-mode batch`: the requests a label run needs, sent through the Batch API at its price.

`BatchRunner.submit` groups request lines over the API's limits, records each group in the
store (`prepared`), uploads its file (`purpose="batch"`) and creates the batch, recording the
file id and batch id as soon as the server gives them; `wait` polls until every batch is
finished and stores the validated answers in the call cache. The labelling pass that follows
is the ordinary sync one: batch answers are cache hits, and every request without a usable
answer (an error line, an invalid answer, an expired or cancelled batch) goes once through the
sync path, then falls back with both reasons (`BatchAwareReranker`).

Killed at any point, the same command resumes: a recorded batch is never uploaded or created
again, and the two windows a store cannot close (killed after the server accepted the upload
or the creation, before its reply was recorded) are closed by looking on the server first, for
a file named after the batch's key and a batch whose metadata carries it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import openai

from onet_llm.errors import LLMError
from onet_llm.rerank.batch import (
    COMPLETION_WINDOW,
    ENDPOINT,
    TERMINAL,
    LineResult,
    batch_key,
    file_name,
    read_results,
    request_line,
    response_format,
    split_lines,
)
from onet_llm.rerank.client import one_line
from onet_llm.rerank.cost import CostMeter, Prices
from onet_llm.rerank.redact import Redactor
from onet_llm.rerank.reranker import Request
from onet_llm.settings import Settings
from onet_llm.types import RerankResult

# With structured_output=auto a batch cannot step down mid-way as the sync client does, so it
# asks for the schema without maxLength, which OpenAI's strict mode accepts.
AUTO_MODE = "json_schema"
# How far back (seconds) to look on the server for a batch created just before a kill.
LOOKBACK_S = 6 * 3600


@dataclass(frozen=True)
class BatchProgress:
    """Where a run's batches stand, for the progress display."""

    batches: int
    requests: int
    done: int
    failed: int
    elapsed_s: float
    states: dict[str, int]


def batch_mode(settings: Settings) -> str:
    return AUTO_MODE if settings.structured_output == "auto" else settings.structured_output


def line_for(request: Request, settings: Settings) -> tuple[str, str, dict]:
    """`(call_key, JSONL line, what the store keeps to read the answer back)`."""
    mode = batch_mode(settings)
    body = {
        "model": settings.llm_model,
        "messages": request.messages,
        "temperature": settings.llm_temperature,
        "max_tokens": settings.llm_max_tokens,
        "response_format": response_format(request.schema, mode),
    }
    call = {"call": request.call, "parameters": request.parameters, "structured_output": mode}
    return request.call_key, request_line(request.call_key, body), call


class BatchRunner:
    """Files and batches through the `openai` client, every step recorded in the store."""

    def __init__(
        self,
        settings: Settings,
        store: Any,
        prices: Prices,
        meter: CostMeter | None = None,
        openai_client: openai.OpenAI | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.prices = prices
        self.meter = meter or CostMeter(settings.max_cost_usd)
        self.redact = Redactor(settings.openai_api_key)
        self._reserved: dict[str, float] = {}  # estimates held against the limit, by batch
        self.openai = openai_client or openai.OpenAI(
            api_key=settings.openai_api_key or "not-needed",
            base_url=settings.openai_base_url,
            timeout=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
        )

    def submit(self, lines: Iterable[tuple[str, str, dict]], run_id: str) -> int:
        """Batch every line not already in one of this run's batches (or in flight anywhere);
        returns the number of batches submitted now."""
        self.store.forget_prepared(run_id)
        skip = self.store.batched_keys(run_id)
        fresh = (line for line in lines if line[0] not in skip)
        settings = self.settings
        submitted = 0
        for group in split_lines(fresh, settings.batch_max_requests, settings.batch_max_bytes):
            key = batch_key(run_id, (call_key for call_key, _, _ in group.lines))
            self.store.add_batch(
                key, run_id, settings.llm_model, settings.openai_base_url, group.lines, group.size
            )
            self.send(self.store.find_batch(key))
            submitted += 1
        return submitted

    def send(self, batch: dict) -> dict:
        """Upload the file and create the batch, whichever is not done yet."""
        if batch["file_id"] is None:
            self.guarded("upload", lambda: self.upload(batch))
            batch = self.store.find_batch(batch["batch_key"])
        if batch["batch_id"] is None:
            self.guarded("create the batch", lambda: self.create(batch))
            batch = self.store.find_batch(batch["batch_key"])
        return batch

    def upload(self, batch: dict) -> None:
        key, name = batch["batch_key"], file_name(batch["batch_key"])
        found = next(
            (f for f in self.openai.files.list(purpose="batch") if f.filename == name), None
        )
        if found is None:
            data = ("\n".join(self.store.batch_lines(key)) + "\n").encode()
            found = self.openai.with_options(max_retries=0).files.create(
                file=(name, data, "application/jsonl"), purpose="batch"
            )
        self.store.update_batch(key, file_id=found.id, status="uploaded")

    def create(self, batch: dict) -> None:
        key = batch["batch_key"]
        created = self.find_created(batch)
        if created is None:
            estimate = self.estimate(key)
            self.meter.reserve(estimate)  # --max-cost-usd stops before paying
            self._reserved[key] = estimate
            created = self.openai.with_options(max_retries=0).batches.create(
                input_file_id=batch["file_id"],
                endpoint=ENDPOINT,
                completion_window=COMPLETION_WINDOW,
                metadata={"onet_llm_batch": key},
            )
        self.store.update_batch(key, batch_id=created.id, status=created.status)

    def find_created(self, batch: dict) -> Any:
        """The server's batch for this key, if one was created before a kill lost its reply."""
        since = batch["created_at"].replace(tzinfo=UTC).timestamp() - LOOKBACK_S
        for found in self.openai.batches.list(limit=100):
            if (found.metadata or {}).get("onet_llm_batch") == batch["batch_key"]:
                return found
            if found.created_at < since:
                return None
        return None

    def estimate(self, key: str) -> float:
        """Upper bound of a batch's cost at the batch rate (as the sync meter estimates)."""
        total = 0.0
        for line in self.store.batch_lines(key):
            tokens_in = len(line) // 3 + 50
            model = self.settings.llm_model
            cost = self.prices.cost(model, tokens_in, self.settings.llm_max_tokens, batch=True)
            total += cost or 0.0
        return total

    def wait(self, run_id: str, on_progress: Callable[[BatchProgress], None] | None = None) -> None:
        """Poll this run's batches until each is finished and processed."""
        started = time.monotonic()
        while True:
            pending = self.store.batches(run_id, unprocessed=True)
            for batch in pending:
                self.advance(batch)
            if on_progress is not None:
                on_progress(self.progress(run_id, time.monotonic() - started))
            if not self.store.batches(run_id, unprocessed=True):
                return
            time.sleep(self.settings.batch_poll_s)

    def advance(self, batch: dict) -> None:
        """One step for one batch: send it, ask how it stands, or read its results."""
        if batch["batch_id"] is None:
            batch = self.send(batch)
        if batch["status"] not in TERMINAL:
            found = self.guarded(
                "check the batch", lambda: self.openai.batches.retrieve(batch["batch_id"])
            )
            counts = found.request_counts
            self.store.update_batch(
                batch["batch_key"],
                status=found.status,
                completed=counts.completed if counts else 0,
                failed=counts.failed if counts else 0,
                output_file_id=found.output_file_id,
                error_file_id=found.error_file_id,
            )
            batch = self.store.find_batch(batch["batch_key"])
            if batch["status"] in TERMINAL:
                batch["errors"] = found.errors
        if batch["status"] in TERMINAL:
            self.guarded("read the batch results", lambda: self.process(batch))

    def process(self, batch: dict) -> None:
        """Read the output and error files, validate every answer as the sync path does, and
        store them with the batch marked processed, in one transaction."""
        key = batch["batch_key"]
        output = self.file_text(batch["output_file_id"])
        errors = self.file_text(batch["error_file_id"])
        calls = self.store.batch_calls(key)
        results = read_results(output, errors, calls, self.redact, missing_reason(batch))
        messages = {
            json.loads(line)["custom_id"]: json.loads(line)["body"]["messages"]
            for line in self.store.batch_lines(key)
        }
        records = [
            self.call_record(result, calls[result.call_key], messages[result.call_key])
            for result in results
            if result.tokens_in is not None or result.content is not None
        ]
        costs = [record["cost_usd"] for record in records]
        cost = None if any(c is None for c in costs) else float(sum(costs))
        outcomes = [
            (r.call_key, "ok" if r.answer is not None else "error", r.error) for r in results
        ]
        self.store.store_batch_results(key, batch["run_id"], records, outcomes, cost)
        self.meter.settle(self._reserved.pop(key, 0.0), cost)

    def call_record(self, result: LineResult, stored: dict, messages: list[dict]) -> dict:
        """The `calls` row of one reply, priced at the batch rate."""
        cost = self.prices.cost(
            self.settings.llm_model,
            result.tokens_in,
            result.tokens_out,
            result.cached_tokens,
            batch=True,
        )
        return {
            **stored["call"],
            "request": {
                "messages": messages,
                "parameters": stored["parameters"],
                "structured_output": stored["structured_output"],
            },
            "response_raw": result.content,
            "response_parsed": result.answer.as_record() if result.answer else None,
            "tokens_in": result.tokens_in,
            "tokens_out": result.tokens_out,
            "cached_tokens": result.cached_tokens,
            "cost_usd": cost,
            "latency_s": None,
            "status": "ok" if result.answer is not None else "error",
            "error": result.error,
            "attempts": 1,
            "validation_retries": 0,
            "transport_retries": 0,
            "mode": "batch",
        }

    def file_text(self, file_id: str | None) -> str:
        return "" if not file_id else self.openai.files.content(file_id).text

    def progress(self, run_id: str, elapsed_s: float) -> BatchProgress:
        batches = self.store.batches(run_id)
        states: dict[str, int] = {}
        for batch in batches:
            states[batch["status"]] = states.get(batch["status"], 0) + 1
        return BatchProgress(
            batches=len(batches),
            requests=sum(b["requests"] for b in batches),
            done=sum(b["completed"] or 0 for b in batches),
            failed=sum(b["failed"] or 0 for b in batches),
            elapsed_s=elapsed_s,
            states=states,
        )

    def cancel(self, batch: dict) -> str:
        """Ask the server to cancel; the next run reads what was answered before it stopped."""
        if batch["batch_id"] is None:
            self.store.forget_prepared(batch["run_id"])
            return "never created: forgotten"
        found = self.guarded("cancel", lambda: self.openai.batches.cancel(batch["batch_id"]))
        self.store.update_batch(batch["batch_key"], status=found.status)
        return found.status

    def guarded(self, doing: str, step: Callable[[], Any]) -> Any:
        """A Batch API step whose failure stops the run with one line (what is recorded
        stays: the same command resumes)."""
        try:
            return step()
        except openai.OpenAIError as failure:
            raise LLMError(
                self.redact(
                    f"Batch API: could not {doing}: {one_line(failure)} (run the same command "
                    "again to resume the recorded batches)"
                )
            ) from None


def missing_reason(batch: dict) -> str:
    """Why a request of a finished batch has no line in its output or error file."""
    status = batch["status"]
    if status == "failed":
        errors = batch.get("errors")
        data = getattr(errors, "data", None) or []
        detail = "; ".join(str(getattr(e, "message", e)) for e in data[:3])
        return f"the batch failed{': ' + detail if detail else ''}"
    if status == "expired":
        return "the batch expired (24 h) before this request ran"
    if status == "cancelled":
        return "the batch was cancelled before this request ran"
    return f"no answer in the batch's files (status {status})"


class BatchAwareReranker:
    """The sync reranker for the pass after the batches: answers come from the cache; a
    request the batch could not answer is asked once in sync and, if that fails too, falls
    back with both reasons in `error`."""

    def __init__(self, reranker: Any, store: Any) -> None:
        self.reranker = reranker
        self.store = store
        self._errors: dict[str | None, dict[str, str]] = {}

    def __getattr__(self, name: str) -> Any:  # settings, prices, template, mode: the reranker's
        return getattr(self.reranker, name)

    def rerank(
        self,
        postings: Sequence[Any],
        shortlists: Sequence[Sequence[Any]],
        top_k: int,
        run_id: str | None = None,
        on_result: Callable[[RerankResult], None] | None = None,
    ) -> list[RerankResult]:
        results = self.reranker.rerank(postings, shortlists, top_k, run_id, on_result)
        if run_id not in self._errors:
            self._errors[run_id] = self.store.batch_errors(run_id) if run_id else {}
        errors = self._errors[run_id]
        for result in results:
            if result.source == "fallback" and result.call_key in errors:
                result.error = f"batch: {errors[result.call_key]}; sync retry: {result.error}"
        return results
