"""Stage 1 of `--llm-stages infer,rerank`: the LLM names the occupation in its own words.

The embedding misses the right occupation when a posting's words are far from every title in
the index; an LLM that first *infers* the occupation ("Registered Nurse" for "RN, night shift,
ICU") gives the index a second, cleaner query (TGRE, Achananuparp, Lim & Lu, ICWSM 2025). The
answer is up to `MAX_TITLES` plain-word titles, an optional 2-digit SOC major group and a short
rationale; it never names a code, so nothing it says can become a label by itself: the titles
are only searched in the index (`fusion.py`).

The call goes through the same client (transport retries, structured-output degradation, cost
meter: one budget for both stages), the same cache (template hash and schema hash in every key)
and the same call log as the rerank. A call that fails for good is an `InferResult` with
`source='fallback'` and the error: the posting keeps its own shortlist.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field, ValidationError

from onet_llm.errors import BudgetError
from onet_llm.rerank.answers import ValidationProblem, _strip_fences
from onet_llm.rerank.cache import (
    ERROR,
    INVALID,
    OK,
    Asked,
    CallCache,
    call_key,
    call_record,
    failed_status,
)
from onet_llm.rerank.client import Completion, CompletionError, LLMClient, Usage
from onet_llm.rerank.cost import Prices
from onet_llm.rerank.prompt import PromptTemplate, fence_safe, trim_body
from onet_llm.rerank.workers import run_workers
from onet_llm.settings import Settings
from onet_llm.taxonomy import SOC_MAJOR_GROUPS
from onet_llm.types import Posting

MAX_TITLES = 3
TITLE_CHARACTERS = 100
RATIONALE_CHARACTERS = 300


class InferAnswer(BaseModel):
    """Up to MAX_TITLES occupation titles in plain words, best first; the 2-digit SOC major
    group of the first ("" when unsure) and a short rationale."""

    titles: list[str] = Field(max_length=MAX_TITLES)
    major_group: str
    rationale: str


@functools.cache
def infer_schema_hash() -> str:
    schema = to_strict_json_schema(InferAnswer)
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class InferSchema:
    """What `LLMClient.complete` sends for the infer call (same protocol as `AnswerSchema`).

    Never with maxLength bounds, whatever the client's mode: llama.cpp turns bounded strings
    into repetition grammars that made Qwen2.5-1.5B generate at 0.14 tokens/s on our shared
    CPU (7 s a token); titles and the rationale are trimmed by `validate_inference` instead,
    and `llm_max_tokens` caps the reply."""

    top_k: int = MAX_TITLES

    def model(self, bounded: bool = False) -> type[InferAnswer]:
        return InferAnswer

    @property
    def hash(self) -> str:
        return infer_schema_hash()


@dataclass(frozen=True)
class Inference:
    """A validated infer answer: distinct, non-empty titles; a known major group or None."""

    titles: tuple[str, ...]
    major_group: str | None
    rationale: str

    def as_record(self) -> dict[str, Any]:
        return {
            "titles": list(self.titles),
            "major_group": self.major_group,
            "rationale": self.rationale,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Inference:
        return cls(tuple(record["titles"]), record.get("major_group"), record["rationale"])


@dataclass
class InferResult:
    """What the infer call did for one posting (source 'llm' or 'fallback' with the error)."""

    inference: Inference | None
    source: str
    error: str | None = None
    call_key: str | None = None
    cached: bool = False
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = 0.0
    latency_s: float = 0.0
    first_call: dict[str, Any] = field(default_factory=dict)


def validate_inference(content: str | None, parsed: InferAnswer | None) -> Inference:
    """The reply as an `Inference`, or a ValidationProblem worded for the model."""
    if parsed is None:
        if not content or not content.strip():
            raise ValidationProblem("the reply was empty")
        try:
            parsed = InferAnswer.model_validate_json(_strip_fences(content))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}"
                for e in error.errors()[:5]
            )
            raise ValidationProblem(f"the reply does not match the schema ({problems})") from None
    titles: list[str] = []
    for title in parsed.titles:
        clean = " ".join(str(title).split())[:TITLE_CHARACTERS]
        if clean and clean.lower() not in {t.lower() for t in titles}:
            titles.append(clean)
    if not titles:
        raise ValidationProblem("no occupation title was given; name at least one")
    group = re.sub(r"\D", "", parsed.major_group or "")[:2]
    rationale = " ".join(parsed.rationale.split())[:RATIONALE_CHARACTERS]
    return Inference(
        tuple(titles[:MAX_TITLES]), group if group in SOC_MAJOR_GROUPS else None, rationale
    )


def infer_retry_messages(
    messages: list[dict], content: str | None, problem: Exception
) -> list[dict]:
    return [
        *messages,
        {"role": "assistant", "content": (content or "")[:2000]},
        {
            "role": "user",
            "content": f"That answer could not be used: {problem}. Reply again with JSON only, "
            'in the form {"titles": [...], "major_group": "", "rationale": "..."}.',
        },
    ]


@dataclass(frozen=True)
class InferRequest:
    messages: list[dict]
    parameters: dict[str, Any]
    call_key: str
    call: dict[str, Any]


class Inferrer:
    """Asks the LLM for each posting's occupation in plain words; cached, logged and priced
    like the rerank, over the rerank's own client (so one budget and one concurrency)."""

    def __init__(self, settings: Settings, store: CallCache, client: LLMClient, prices: Prices):
        self.settings = settings
        self.store = store
        self.client = client
        self.prices = prices
        self.template = PromptTemplate.load(settings.infer_prompt_version)
        self.schema = InferSchema()

    def infer(
        self,
        postings: Sequence[Posting],
        examples: Sequence[Sequence[dict[str, str]]],
        run_id: str | None = None,
        on_result: Callable[[InferResult], None] | None = None,
    ) -> list[InferResult]:
        """One result per posting, in order; BudgetError / LLMError stop the run as in the
        rerank, any other failure is that posting's fallback."""
        items = list(zip(postings, examples, strict=True))
        return run_workers(
            items,
            lambda item: self.infer_one(item[0], item[1], run_id),
            self.settings.llm_concurrency,
            "infer",
            on_result,
        )

    def render(self, posting: Posting, examples: Sequence[dict[str, str]]) -> InferRequest:
        settings = self.settings
        messages = self.template.render(
            title=fence_safe(posting.title.strip()),
            body=fence_safe(trim_body(posting.body, settings.llm_body_characters)),
            examples=list(examples),
            max_titles=MAX_TITLES,
        )
        parameters = {
            "stage": "infer",
            "temperature": settings.llm_temperature,
            "max_tokens": settings.llm_max_tokens,
        }
        key = call_key(
            settings.llm_model, self.template.hash, self.schema.hash, messages, parameters
        )
        call = {
            "call_key": key,
            "model": settings.llm_model,
            "prompt_version": self.template.version,
            "prompt_hash": self.template.hash,
            "schema_hash": self.schema.hash,
        }
        return InferRequest(messages, parameters, key, call)

    def infer_one(
        self, posting: Posting, examples: Sequence[dict[str, str]], run_id: str | None = None
    ) -> InferResult:
        started = time.perf_counter()
        request = self.render(posting, examples)
        hit = self.store.cached_call(request.call_key)
        if hit is not None:  # an answer, or a cached invalid reply: the same fallback again
            self.store.record_call({**request.call, "status": hit["status"]}, run_id, cached=True)
            invalid = hit["status"] == INVALID
            return InferResult(
                None if invalid else Inference.from_record(hit["response_parsed"]),
                "fallback" if invalid else "llm",
                error=hit["error"] if invalid else None,
                call_key=request.call_key,
                cached=True,
                latency_s=time.perf_counter() - started,
                first_call={key: hit[key] for key in ("tokens_in", "tokens_out", "latency_s")},
            )
        usage = Usage()
        asked = self.ask(request, usage, run_id, started)
        inference, error = asked.answer, asked.error
        cost = self.record(
            request, asked.conversation, asked.content, inference, usage, started, asked.status,
            error, run_id,
        )  # fmt: skip
        return InferResult(
            inference,
            "llm" if inference is not None else "fallback",
            error=error,
            call_key=request.call_key,
            tokens_in=usage.tokens_in,
            tokens_out=usage.tokens_out,
            cost_usd=cost,
            latency_s=time.perf_counter() - started,
        )

    def ask(
        self, request: InferRequest, usage: Usage, run_id: str | None, started: float
    ) -> Asked[Inference]:
        """Ask, and ask again with the problem shown (at most `llm_validation_retries` times);
        how the call ended (`Asked`), as the rerank stage's `ask` returns it."""
        conversation = list(request.messages)
        content: str | None = None
        error: str | None = None
        completion: Completion | None = None
        for validation_round in range(self.settings.llm_validation_retries + 1):
            try:
                completion = self.client.complete(conversation, self.schema, usage)  # type: ignore[arg-type]
            except BudgetError:
                if usage.http:
                    self.record(request, conversation, content, None, usage, started,
                                "error", "stopped by --max-cost-usd", run_id)  # fmt: skip
                raise
            except CompletionError as failure:
                failed = f"LLM infer request failed: {failure}"
                return Asked(None, conversation, content, failed, ERROR)
            content = completion.content
            try:
                if completion.problem is not None:
                    raise ValidationProblem(completion.problem)
                parsed = completion.parsed if isinstance(completion.parsed, InferAnswer) else None
                inference = validate_inference(content, parsed)
                return Asked(inference, conversation, content, None, OK)
            except ValidationProblem as invalid:
                error = f"invalid infer answer: {invalid}"
                if validation_round == self.settings.llm_validation_retries:
                    break
                usage.validation_retries += 1
                conversation = infer_retry_messages(request.messages, content, invalid)
        return Asked(None, conversation, content, error, failed_status(completion))

    def record(
        self,
        request: InferRequest,
        conversation: list[dict],
        content: str | None,
        inference: Inference | None,
        usage: Usage,
        started: float,
        status: str,
        error: str | None,
        run_id: str | None,
    ) -> float | None:
        cost = self.prices.cost(
            self.settings.llm_model, usage.tokens_in, usage.tokens_out, usage.cached_tokens
        )
        sent = {
            "messages": conversation,
            "parameters": request.parameters,
            "structured_output": self.client.mode,
        }
        parsed = inference.as_record() if inference is not None else None
        latency = time.perf_counter() - started
        record = call_record(
            request.call, sent, content, parsed, usage, cost, latency, status, error
        )
        self.store.record_call(record, run_id, cached=False)
        return cost
