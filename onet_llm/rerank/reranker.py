"""The LLM step, orchestrated: render the prompt, look up the cache, ask, validate, map back to
codes, fall back. The pieces live beside it: `prompt`, `schema`, `client` (transport, structured
output, cost meter), `cost`, `answers`, `cache`.

Public contract (the eval and review modules build on it)::

    reranker = Reranker(settings, store)            # Settings + an open Store
    results = reranker.rerank(postings, shortlists, top_k, run_id=None)

- `postings`: a list of `Posting(posting_id, title, body)` (plain 3-tuples work too).
- `shortlists`: per posting a `list[types.Candidate]`, best embedding score first.
- returns per posting a `RerankResult` with
  `labels` (`types.Label`s: onet_code, onet_title, score = the embedding score, rationale,
  confidence; best first, `top_k` long when the shortlist allows), `source` ('llm' or
  'fallback'), `error` (str | None, set on fallback), `call_key` (str | None), `cached` (bool),
  `tokens_in`, `tokens_out`, `cost_usd` (float | None: None = the model has no known price),
  `latency_s`; plus `attempts`, `validation_retries`, `transport_retries` for audits, and
  `answer`, the LLM's own validated picks (None on a fallback).

Why it is shaped this way:
- The model answers with candidate *numbers* (small models copy the first code listed when asked
  for codes); Python maps numbers back to codes, so nothing outside the shortlist can become a
  label. A number off the list, malformed JSON or a cut-off answer is a validation problem: the
  request is repeated with the problem shown to the model, at most `llm_validation_retries`
  times.
- Transport errors (timeouts, connection errors, 5xx) go through tenacity with exponential
  backoff and jitter; 429s have their own, larger budget and honour `Retry-After`.
- Whatever fails, the posting keeps its embedding ranking (`source='fallback'`, error recorded):
  no row is ever lost. Only a misconfiguration (bad key, unknown model) or the cost limit stops
  the run, as an `LLMError` / `BudgetError`.
- Every request is keyed by a hash of (model, prompt template hash, schema hash, rendered
  messages, parameters) and cached in the store; a cached answer costs nothing and is logged as
  a cache hit. The API key never reaches the store: it lives only in the openai client.
- Workers are threads (`llm_concurrency`); the store serialises their writes.
- The client is anything with `complete(messages, schema, usage) -> Completion`
  (`client.LLMClient`): `OpenAIClient` in the product, a fake one in the fast unit tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from onet_llm.errors import BudgetError, InputError, LLMError
from onet_llm.rerank.answers import (
    ValidationProblem,
    fallback_labels,
    labels_from_answer,
    map_answer,
    parse_answer,
)
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
from onet_llm.rerank.client import Completion, CompletionError, LLMClient, OpenAIClient, Usage
from onet_llm.rerank.cost import Prices
from onet_llm.rerank.guard import REQUEST_FAILED, EndpointGuard
from onet_llm.rerank.prompt import (
    PromptTemplate,
    candidate_order,
    numbered_candidates,
    one_line_description,
    trim_body,
)
from onet_llm.rerank.schema import AnswerSchema
from onet_llm.rerank.workers import run_workers
from onet_llm.settings import Settings
from onet_llm.types import Answer, Candidate, Posting, RerankResult

if TYPE_CHECKING:
    from onet_llm.taxonomy import Taxonomy


def is_uncertain(shortlist: Sequence[Candidate], margin: float) -> bool:
    """True when the embedding's top-1 is not clearly ahead of its runner-up: these rows are
    the ones `--llm-when uncertain` sends to the LLM."""
    if len(shortlist) < 2:
        return False
    return shortlist[0].score - shortlist[1].score < margin


@dataclass(frozen=True)
class Request:
    """One posting's rendered request: what the model sees, and the key it is cached under."""

    shown: list[Candidate]
    messages: list[dict]
    parameters: dict[str, Any]
    schema: AnswerSchema
    call_key: str
    call: dict[str, Any]  # the identity columns of the `calls` row


def retry_messages(messages: list[dict], content: str | None, problem: Exception) -> list[dict]:
    """The conversation for a validation retry: the unusable answer and what was wrong."""
    return [
        *messages,
        {"role": "assistant", "content": (content or "")[:2000]},
        {
            "role": "user",
            "content": f"That answer could not be used: {problem}. Reply again with "
            "JSON only, in the form asked for, choosing candidates by their number.",
        },
    ]


class Reranker:
    """Picks and ranks the final top K from each posting's shortlist with an LLM behind any
    OpenAI-compatible endpoint. See the module docstring for the contract."""

    def __init__(
        self,
        settings: Settings,
        store: CallCache,
        taxonomy: Taxonomy | None = None,
        client: LLMClient | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._taxonomy = taxonomy
        self.template = PromptTemplate.load(settings.prompt_version)
        self.prices = Prices(settings)
        if settings.max_cost_usd is not None and not self.prices.known(settings.llm_model):
            raise InputError(
                f"--max-cost-usd needs a price for model {settings.llm_model!r}: set "
                "ONET_LLM_PRICE_INPUT and ONET_LLM_PRICE_OUTPUT (USD per million tokens) or "
                "ONET_LLM_PRICES_FILE"
            )
        self.client: LLMClient = client or OpenAIClient(settings, self.prices)
        self.guard = EndpointGuard(settings.llm_fail_fast_after)

    @property
    def mode(self) -> str:
        """The structured-output mode the client uses now."""
        return self.client.mode

    @cached_property
    def taxonomy(self) -> Taxonomy:
        if self._taxonomy is None:
            from onet_llm.taxonomy import load_taxonomy

            self._taxonomy = load_taxonomy()
        return self._taxonomy

    @cached_property
    def descriptions(self) -> dict[str, str]:
        return {
            occupation.code: one_line_description(occupation.description)
            for occupation in self.taxonomy.occupations
        }

    def rerank(
        self,
        postings: Sequence[Posting | tuple[str, str, str]],
        shortlists: Sequence[Sequence[Candidate]],
        top_k: int,
        run_id: str | None = None,
        on_result: Callable[[RerankResult], None] | None = None,
    ) -> list[RerankResult]:
        """One result per posting, in order. Raises BudgetError (after letting requests in
        flight finish) when the cost limit would be passed, LLMError on misconfiguration.
        `on_result` is called (from the worker threads) as each posting finishes: progress."""
        if len(postings) != len(shortlists):
            raise ValueError("one shortlist per posting")
        self.descriptions  # noqa: B018  (load once, before the workers start)

        def work(item: tuple) -> RerankResult:
            posting, shortlist = item
            result = self.rerank_one(Posting(*posting), list(shortlist), top_k, run_id)
            self.guard.record(result)  # the first N failed requests stop the run
            return result

        items = list(zip(postings, shortlists, strict=True))
        return run_workers(items, work, self.settings.llm_concurrency, "rerank", on_result)

    def rerank_one(
        self, posting: Posting, shortlist: list[Candidate], top_k: int, run_id: str | None = None
    ) -> RerankResult:
        started = time.perf_counter()
        if not shortlist:
            return RerankResult(labels=[], source="fallback", error="empty shortlist")
        request = self.render(posting, shortlist, top_k)
        hit = self.cached_result(request, shortlist, top_k, run_id, started)
        if hit is not None:
            return hit
        usage = Usage()
        asked = self.ask(request, usage, run_id, started)
        answer, error = asked.answer, asked.error
        cost = self._record(
            request, asked.conversation, asked.content, answer, usage, started, asked.status,
            error, run_id,
        )  # fmt: skip
        common = {
            "call_key": request.call_key,
            "tokens_in": usage.tokens_in,
            "tokens_out": usage.tokens_out,
            "cost_usd": cost,
            "latency_s": time.perf_counter() - started,
            "attempts": usage.http,
            "validation_retries": usage.validation_retries,
            "transport_retries": usage.transport_retries,
        }
        if answer is None:
            return RerankResult(
                labels=fallback_labels(shortlist, top_k), source="fallback", error=error, **common
            )
        return RerankResult(
            labels=labels_from_answer(answer, shortlist, top_k),
            source="llm",
            answer=answer,
            **common,
        )

    def cached_result(
        self,
        request: Request,
        shortlist: list[Candidate],
        top_k: int,
        run_id: str | None,
        started: float,
    ) -> RerankResult | None:
        """The result served from the cache (logged as a cache hit), or None on a miss. A
        batch's answers reach the rows this way too: they are stored under the same key. A
        cached invalid reply gives the same fallback (and error) as when it was asked."""
        hit = self.store.cached_call(request.call_key)
        if hit is None:
            return None
        self.store.record_call({**request.call, "status": hit["status"]}, run_id, cached=True)
        served = {
            "call_key": request.call_key,
            "cached": True,
            "cost_usd": 0.0,
            "latency_s": time.perf_counter() - started,
            "first_call": {key: hit[key] for key in ("tokens_in", "tokens_out", "latency_s")},
        }
        if hit["status"] == INVALID:
            labels = fallback_labels(shortlist, top_k)
            return RerankResult(labels=labels, source="fallback", error=hit["error"], **served)
        answer = Answer.from_record(hit["response_parsed"])
        labels = labels_from_answer(answer, shortlist, top_k)
        return RerankResult(labels=labels, source="llm", answer=answer, **served)

    def render(self, posting: Posting, shortlist: list[Candidate], top_k: int) -> Request:
        """The messages, parameters and cache key of one posting's request."""
        settings = self.settings
        text = f"{posting.title}\n{posting.body}"
        order = candidate_order(shortlist, settings.candidate_order, settings.order_seed, text)
        shown = [shortlist[position] for position in order]
        messages = self.template.messages(
            posting.title.strip(),
            trim_body(posting.body, settings.llm_body_characters),
            numbered_candidates(shown, self.descriptions),
            top_k,
        )
        parameters = {
            "temperature": settings.llm_temperature,
            "max_tokens": settings.llm_max_tokens,
            "top_k": top_k,
            "candidate_order": settings.candidate_order,
            "order_seed": settings.order_seed if settings.candidate_order == "shuffle" else None,
            "shortlist": [candidate.onet_code for candidate in shown],
        }
        schema = AnswerSchema(top_k)
        key = call_key(settings.llm_model, self.template.hash, schema.hash, messages, parameters)
        call = {
            "call_key": key,
            "model": settings.llm_model,
            "prompt_version": self.template.version,
            "prompt_hash": self.template.hash,
            "schema_hash": schema.hash,
        }
        return Request(shown, messages, parameters, schema, key, call)

    def ask(
        self, request: Request, usage: Usage, run_id: str | None, started: float
    ) -> Asked[Answer]:
        """Ask, and ask again (at most `llm_validation_retries` times) with the problem shown
        while the answer cannot be used. Returns how the call ended (`Asked`): the answer
        (None: fall back), the last conversation, reply and error, and the stored status."""
        retries = self.settings.llm_validation_retries
        top_k = request.schema.top_k
        conversation = list(request.messages)
        content: str | None = None
        error: str | None = None
        completion: Completion | None = None
        for validation_round in range(retries + 1):
            try:
                completion = self.client.complete(conversation, request.schema, usage)
            except BudgetError:
                if usage.http:
                    stopped = "stopped by --max-cost-usd"
                    self._record(
                        request,
                        conversation,
                        content,
                        None,
                        usage,
                        started,
                        "error",
                        stopped,
                        run_id,
                    )
                raise
            except CompletionError as failure:
                return Asked(None, conversation, content, f"{REQUEST_FAILED}: {failure}", ERROR)
            except LLMError as failure:  # the key or model is refused: logged, then the run stops
                self._record(
                    request, conversation, content, None, usage, started, "error", str(failure),
                    run_id,
                )  # fmt: skip
                raise
            content = completion.content
            try:
                if completion.problem is not None:
                    raise ValidationProblem(completion.problem)
                answer = parse_answer(content, completion.parsed, top_k)
                mapped = map_answer(answer, request.shown, top_k)
                return Asked(mapped, conversation, content, None, OK)
            except ValidationProblem as invalid:
                error = f"invalid answer: {invalid}"
                if validation_round == retries:
                    break
                usage.validation_retries += 1
                conversation = retry_messages(request.messages, content, invalid)
        return Asked(None, conversation, content, error, failed_status(completion))

    def _record(
        self,
        request: Request,
        conversation: list[dict],
        content: str | None,
        answer: Answer | None,
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
        parsed = answer.as_record() if answer is not None else None
        latency = time.perf_counter() - started
        record = call_record(
            request.call, sent, content, parsed, usage, cost, latency, status, error
        )
        self.store.record_call(record, run_id, cached=False)
        return cost
