"""The call cache behind its own protocol (the store implements it: `store/calls.py`).

Every request is keyed by a hash of (model, prompt template hash, schema hash, rendered
messages, parameters): the same request is never paid twice, and a cached answer costs nothing
and is logged as a cache hit. The API key is never part of a key or a record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from onet_llm.rerank.client import Completion

AnswerT = TypeVar("AnswerT")

OK, INVALID, ERROR = "ok", "invalid", "error"  # how a call ended; a rerun serves ok and invalid


class CallCache(Protocol):
    def cached_call(self, call_key: str) -> dict | None:
        """An earlier call served in place of asking, or None: its `status` (ok or invalid),
        `error`, the validated answer (`response_parsed`, None when invalid) and usage."""
        ...

    def record_call(self, call: dict, run_id: str | None, cached: bool) -> None:
        """Log a request (and, unless `cached`, store the call)."""
        ...


def failed_status(last: Completion | None) -> str:
    """How a call that ended without an answer is stored, from its last completion (None: the
    request itself failed), which decides whether a rerun asks it again.

    `invalid`: the model replied, and every reply failed validation (a code off the list, cut
    off at the token limit, empty). At the same model, prompt and parameters the same request
    buys the same reply, so it is cached like an answer: the row falls back again, at no cost.
    `error`: no reply (time-out, 5xx, a refusal, the budget, a response without a message or
    that is not a chat completion): asked again on the next run, when the cause may be gone."""
    if last is None or last.no_reply or last.content is None:
        return ERROR
    return INVALID


@dataclass(frozen=True)
class Asked(Generic[AnswerT]):
    """How one asked call ended, for either LLM stage: the validated answer (None: fall back),
    the last conversation sent, the last reply, the error, and the `status` it is stored with
    (ok, invalid or error; see `failed_status`)."""

    answer: AnswerT | None
    conversation: list[dict]
    content: str | None
    error: str | None
    status: str


def call_key(
    model: str,
    prompt_hash: str,
    schema_hash: str,
    messages: list[dict],
    parameters: dict[str, Any],
) -> str:
    return hashlib.sha256(
        json.dumps(
            {
                "model": model,
                "prompt_hash": prompt_hash,
                "schema_hash": schema_hash,
                "messages": messages,
                "parameters": parameters,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()


def call_record(
    call: dict[str, Any],
    request: dict[str, Any],
    content: str | None,
    parsed: dict | None,
    usage: Any,
    cost: float | None,
    latency_s: float,
    status: str,
    error: str | None,
) -> dict[str, Any]:
    """The row `record_call` stores for one asked call, the same for every LLM stage: what was
    sent (`request`: messages, parameters, structured-output mode), what came back, and the
    call's `Usage` (tokens, attempts, retries), cost and latency."""
    return {
        **call,
        "request": request,
        "response_raw": content,
        "response_parsed": parsed,
        "tokens_in": usage.tokens_in,
        "tokens_out": usage.tokens_out,
        "cached_tokens": usage.cached_tokens,
        "cost_usd": cost,
        "latency_s": latency_s,
        "status": status,
        "error": error,
        "attempts": usage.http,
        "validation_retries": usage.validation_retries,
        "transport_retries": usage.transport_retries,
    }
