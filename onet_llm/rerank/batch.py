"""The Batch API's file formats, without any I/O: request lines, splitting them over the API's
limits, and reading the output and error files back into answers or reasons.

A request line is the sync request as JSON (`custom_id` = the call's cache key, the same
messages, parameters and response_format), so an answer that comes back through a batch is
stored under the key a sync run looks up, and a sync run's answer serves a batch run. The
output is read with the sync path's own pieces (`client.completion_from_body`,
`answers.parse_answer` and `map_answer`): a batch answer is accepted exactly when a sync one
would be. See https://platform.openai.com/docs/guides/batch for the formats.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from onet_llm.rerank.answers import ValidationProblem, map_answer, parse_answer
from onet_llm.rerank.client import cached_token_count, completion_from_body, token_count
from onet_llm.rerank.redact import Redactor
from onet_llm.rerank.schema import AnswerSchema
from onet_llm.types import Answer, Candidate

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
# Server states after which a batch changes no more; its files can be read.
TERMINAL = ("completed", "failed", "expired", "cancelled")


def response_format(schema: AnswerSchema, mode: str) -> dict[str, Any]:
    """The `response_format` the sync client sends in `mode`, as plain JSON for a line."""
    if mode == "json_object":
        return {"type": "json_object"}
    from openai.lib._parsing._completions import type_to_response_format_param

    return dict(type_to_response_format_param(schema.model(mode == "json_schema_bounded")))


def request_line(call_key: str, body: dict[str, Any]) -> str:
    """One line of the input file: the chat completion request under its cache key."""
    line = {"custom_id": call_key, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


def batch_key(run_id: str, call_keys: Iterable[str]) -> str:
    """A batch's identity: the same run and requests give the same key, so a resumed run finds
    the batch (and its file on the server, by name) instead of making another."""
    return hashlib.sha256("\n".join([run_id, *sorted(call_keys)]).encode()).hexdigest()[:24]


def file_name(key: str) -> str:
    return f"onet-llm-{key}.jsonl"


@dataclass
class Group:
    """Lines bound for one batch; `size` is the bytes of the JSONL they make."""

    lines: list[tuple[str, str, dict]] = field(default_factory=list)  # (call_key, line, call)
    size: int = 0


def split_lines(
    lines: Iterable[tuple[str, str, dict]], max_requests: int, max_bytes: int
) -> Iterator[Group]:
    """Groups of at most `max_requests` lines and `max_bytes` bytes, in input order; a key
    seen twice (two identical postings) is asked once."""
    group, seen = Group(), set()
    for call_key, line, call in lines:
        if call_key in seen:
            continue
        seen.add(call_key)
        size = len(line.encode()) + 1
        if group.lines and (len(group.lines) >= max_requests or group.size + size > max_bytes):
            yield group
            group = Group()
        group.lines.append((call_key, line, call))
        group.size += size
    if group.lines:
        yield group


@dataclass(frozen=True)
class LineResult:
    """One request's outcome in a finished batch: a validated answer, or why there is none.
    Token counts are None when the line never reached the model (expired, cancelled)."""

    call_key: str
    answer: Answer | None
    content: str | None
    error: str | None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cached_tokens: int = 0


def read_lines(text: str) -> Iterator[dict]:
    """The JSON objects of a JSONL file; a line that is not one is skipped (it names no
    request; the request it belonged to is then 'missing' and retried in sync)."""
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("custom_id"), str):
            yield item


def line_error(item: dict) -> str:
    """Why a line of the output or error file has no answer, in one line."""
    error = item.get("error")
    if isinstance(error, dict) and (error.get("message") or error.get("code")):
        return f"{error.get('code') or 'error'}: {error.get('message') or ''}".strip()[:300]
    response = item.get("response") or {}
    body = response.get("body") if isinstance(response, dict) else None
    message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    status = response.get("status_code") if isinstance(response, dict) else None
    return f"HTTP {status}: {' '.join(str(message or 'no body').split())[:200]}"


def read_result(item: dict, call: dict, redact: Redactor) -> LineResult:
    """One output line through the sync path's reading and validation. `call` is what was
    stored with the request: its `parameters` hold the shortlist codes in the order shown."""
    key = item["custom_id"]
    response = item.get("response")
    if not isinstance(response, dict) or response.get("status_code") != 200:
        return LineResult(key, None, None, f"batch request failed: {line_error(item)}")
    body = response.get("body")
    if not isinstance(body, dict):
        return LineResult(key, None, None, "batch request failed: the response has no body")
    usage = body.get("usage")
    tokens = (token_count(usage, "prompt_tokens"), token_count(usage, "completion_tokens"))
    cached = cached_token_count(usage)
    completion = completion_from_body(body, redact)
    parameters = call["parameters"]
    shown = [Candidate(code, "", 0.0) for code in parameters["shortlist"]]
    try:
        if completion.problem is not None:
            raise ValidationProblem(completion.problem)
        answer = parse_answer(completion.content, None, parameters["top_k"])
        mapped = map_answer(answer, shown, parameters["top_k"])
    except ValidationProblem as invalid:
        error = f"invalid answer: {invalid}"
        return LineResult(key, None, completion.content, error, *tokens, cached)
    return LineResult(key, mapped, completion.content, None, *tokens, cached)


def read_results(
    output_text: str, error_text: str, calls: dict[str, dict], redact: Redactor, missing: str
) -> list[LineResult]:
    """Every request of a finished batch: answered, failed (error file or a non-200 line), or
    `missing` (no line at all: the batch failed, expired or was cancelled first)."""
    results: dict[str, LineResult] = {}
    for item in read_lines(output_text):
        if item["custom_id"] in calls:
            results[item["custom_id"]] = read_result(item, calls[item["custom_id"]], redact)
    for item in read_lines(error_text):
        key = item["custom_id"]
        if key in calls and key not in results:
            results[key] = LineResult(key, None, None, f"batch request failed: {line_error(item)}")
    for key in calls:
        results.setdefault(key, LineResult(key, None, None, missing))
    return [results[key] for key in calls]
