"""The LLM step: render the prompt, call, validate, map back to codes, fall back.

Public contract (the eval and review modules build on it)::

    reranker = Reranker(settings, store)            # Settings + an open Store
    results = reranker.rerank(postings, shortlists, top_k, run_id=None)

- `postings`: a list of `Posting(posting_id, title, body)` (plain 3-tuples work too).
- `shortlists`: per posting a `list[pipeline.Candidate]`, best embedding score first.
- returns per posting a `RerankResult` with
  `labels` (list of dicts: onet_code, onet_title, score = the embedding score, rationale,
  confidence; best first, `top_k` long when the shortlist allows), `source` ('llm' or
  'fallback'), `error` (str | None, set on fallback), `call_key` (str | None), `cached` (bool),
  `tokens_in`, `tokens_out`, `cost_usd` (float | None: None = the model has no known price),
  `latency_s`; plus `attempts`, `validation_retries`, `transport_retries` for audits.

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
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jinja2
import openai
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field, ValidationError, create_model
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from onet_llm.errors import BudgetError, InputError, LLMError
from onet_llm.resources import prompts_folder
from onet_llm.settings import Settings
from onet_llm.store import Store

if TYPE_CHECKING:
    from onet_llm.pipeline import Candidate
    from onet_llm.taxonomy import Taxonomy

PROMPTS_DIR = prompts_folder()
RATIONALE_CHARACTERS = 300
RATIONALE_SCHEMA_CHARACTERS = 160
DESCRIPTION_CHARACTERS = 150
RETRY_AFTER_CAP_S = 300.0

# USD per million tokens (input, output), as published by OpenAI in 2025. Override or extend
# with ONET_LLM_PRICES_FILE (JSON {"model": [input, output]}) or, for the model in use,
# ONET_LLM_PRICE_INPUT / ONET_LLM_PRICE_OUTPUT. A model with no price has cost "unknown".
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}


# -- the schema: the contract between this code and the model ---------------------------------
class Choice(BaseModel):
    number: int
    rationale: str
    confidence: float


class RerankAnswer(BaseModel):
    """Chosen candidates by number, best first; an empty list with none_fits=true is allowed."""

    choices: list[Choice]
    none_fits: bool


class BoundedChoice(Choice):
    rationale: str = Field(json_schema_extra={"maxLength": RATIONALE_SCHEMA_CHARACTERS})


@functools.cache
def answer_model(top_k: int, bounded: bool = False) -> type[RerankAnswer]:
    """The schema sent for `top_k`: at most top_k choices (maxItems: enforced by grammar
    engines, accepted by OpenAI's strict mode), so small models do not list every candidate
    until they hit max_tokens. `bounded` also caps each rationale's length (maxLength, schema
    only: longer ones are trimmed, not rejected); servers that refuse that keyword get the
    unbounded schema (see Reranker._degrade)."""
    return create_model(
        "RerankAnswer",
        __base__=RerankAnswer,
        choices=(list[BoundedChoice if bounded else Choice], Field(max_length=top_k)),
    )


@functools.cache
def schema_hash(top_k: int) -> str:
    schema = to_strict_json_schema(answer_model(top_k, bounded=True))
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]


# Structured-output modes, most constrained first; "auto" starts at the top and steps down
# when a server rejects a response_format with a 400.
MODES = ("json_schema_bounded", "json_schema", "json_object")


class Posting(NamedTuple):
    posting_id: str
    title: str
    body: str


@dataclass
class RerankResult:
    labels: list[dict]
    source: str  # llm | fallback
    error: str | None = None
    call_key: str | None = None
    cached: bool = False
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = 0.0
    latency_s: float = 0.0
    attempts: int = 0
    validation_retries: int = 0
    transport_retries: int = 0


class ValidationProblem(Exception):
    """The answer arrived but cannot be used; the message is shown to the model on retry."""


# -- the prompt --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptTemplate:
    """A versioned template file `prompts/<version>.md` with `## system` and `## user`
    sections; its hash (of the whole file) is part of every cache key."""

    version: str
    system: str
    user: jinja2.Template
    hash: str

    @classmethod
    def load(cls, version: str) -> PromptTemplate:
        path = PROMPTS_DIR / f"{version}.md"
        if not path.is_file():
            names = (entry.name for entry in PROMPTS_DIR.iterdir())
            known = ", ".join(sorted(n.removesuffix(".md") for n in names if n.endswith(".md")))
            raise InputError(f"unknown prompt version {version!r} (known: {known})")
        text = path.read_text(encoding="utf-8")
        match = re.search(r"^## system\n(.*?)^## user\n(.*)\Z", text, re.S | re.M)
        if match is None:
            raise InputError(f"{path}: needs a '## system' and a '## user' section")
        environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        return cls(
            version=version,
            system=match.group(1).strip(),
            user=environment.from_string(match.group(2).strip()),
            hash=hashlib.sha256(text.encode()).hexdigest()[:16],
        )

    def messages(self, title: str, body: str, candidates: list[dict], top_k: int) -> list[dict]:
        user = self.user.render(title=title, body=body, candidates=candidates, top_k=top_k)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


def one_line_description(description: str, limit: int = DESCRIPTION_CHARACTERS) -> str:
    """First sentence of an O*NET description, cut at a word boundary."""
    sentence = description.split(". ")[0].strip().rstrip(".")
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0] + "..."
    return sentence


def trim_body(body: str, limit: int) -> str:
    body = " ".join(body.split())
    return body if len(body) <= limit else body[:limit].rsplit(" ", 1)[0] + " ..."


def candidate_order(
    shortlist: Sequence[Candidate], order: str, seed: int, posting_text: str
) -> list[int]:
    """Positions of the shortlist in the order shown to the model. 'shuffle' is seeded by the
    seed and the posting, so a rerun renders the same prompt (and hits the cache)."""
    positions = list(range(len(shortlist)))
    if order == "shuffle":
        digest = hashlib.sha256(f"{seed}\n{posting_text}".encode()).digest()
        random.Random(int.from_bytes(digest[:8], "big")).shuffle(positions)
    return positions


def is_uncertain(shortlist: Sequence[Candidate], margin: float) -> bool:
    """True when the embedding's top-1 is not clearly ahead of its runner-up: these rows are
    the ones `--llm-when uncertain` sends to the LLM."""
    if len(shortlist) < 2:
        return False
    return shortlist[0].score - shortlist[1].score < margin


# -- prices and the cost limit -------------------------------------------------------------------
class Prices:
    """Per-model prices; `cost()` is None for a model without a price (cost unknown)."""

    def __init__(self, settings: Settings) -> None:
        self.table: dict[str, tuple[float, float]] = dict(DEFAULT_PRICES)
        if settings.prices_file is not None:
            try:
                loaded = json.loads(Path(settings.prices_file).read_text())
                self.table.update({str(k): (float(v[0]), float(v[1])) for k, v in loaded.items()})
            except (OSError, ValueError, TypeError, IndexError, AttributeError) as error:
                raise InputError(
                    f"{settings.prices_file}: cannot read prices "
                    f'(want JSON {{"model": [input_usd_per_million, output_usd_per_million]}}): '
                    f"{error}"
                ) from None
        if (settings.price_input_per_million is None) != (
            settings.price_output_per_million is None
        ):
            raise InputError("set both ONET_LLM_PRICE_INPUT and ONET_LLM_PRICE_OUTPUT, or neither")
        if settings.price_input_per_million is not None:
            self.table[settings.llm_model] = (
                settings.price_input_per_million,
                float(settings.price_output_per_million or 0.0),
            )

    def known(self, model: str) -> bool:
        return model in self.table

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float | None:
        if model not in self.table:
            return None
        price_in, price_out = self.table[model]
        return (tokens_in * price_in + tokens_out * price_out) / 1_000_000


class CostMeter:
    """Money spent by this reranker, with a limit checked *before* each request against a
    pessimistic estimate, so the run stops before it overspends (concurrent requests reserve
    their estimate until they settle)."""

    def __init__(self, limit_usd: float | None) -> None:
        self.limit_usd = limit_usd
        self.spent_usd = 0.0
        self._reserved = 0.0
        self._lock = threading.Lock()

    def reserve(self, estimate_usd: float) -> None:
        with self._lock:
            if (
                self.limit_usd is not None
                and self.spent_usd + self._reserved + estimate_usd > self.limit_usd
            ):
                raise BudgetError(
                    f"stopped before exceeding --max-cost-usd {self.limit_usd:g}: spent "
                    f"${self.spent_usd:.4f}, the next call may cost up to ${estimate_usd:.4f}; "
                    "labelled rows are kept, run again with a higher limit to resume"
                )
            self._reserved += estimate_usd

    def settle(self, estimate_usd: float, actual_usd: float | None) -> None:
        with self._lock:
            self._reserved -= estimate_usd
            self.spent_usd += actual_usd or 0.0


# -- transport retries -----------------------------------------------------------------------------
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


# -- mapping an answer back to the shortlist -------------------------------------------------------
def parse_answer(content: str | None, parsed: RerankAnswer | None, top_k: int) -> RerankAnswer:
    if parsed is not None:
        return parsed
    if not content or not content.strip():
        raise ValidationProblem("the reply was empty")
    try:
        return answer_model(top_k).model_validate_json(_strip_fences(content))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}"
            for e in error.errors()[:5]
        )
        raise ValidationProblem(f"the reply does not match the schema ({problems})") from None


def _strip_fences(content: str) -> str:
    text = content.strip()
    if text.startswith("```"):
        text = re.sub(r"^```[a-zA-Z]*\n?|```$", "", text).strip()
    return text


def map_answer(answer: RerankAnswer, shown: list[Candidate], top_k: int) -> dict[str, Any]:
    """Numbers -> codes. Rejects numbers off the list; clamps confidence to [0, 1] and trims
    rationales (grammar engines do not enforce bounds); drops repeated numbers."""
    choices = []
    seen: set[int] = set()
    for choice in answer.choices:
        if not 1 <= choice.number <= len(shown):
            raise ValidationProblem(
                f"choice number {choice.number} is not on the list; use only the numbers "
                f"1 to {len(shown)} shown before each candidate"
            )
        if choice.number in seen:
            continue
        seen.add(choice.number)
        confidence = choice.confidence
        confidence = None if math.isnan(confidence) else min(max(confidence, 0.0), 1.0)
        rationale = " ".join(choice.rationale.split())[:RATIONALE_CHARACTERS]
        candidate = shown[choice.number - 1]
        choices.append(
            {
                "number": choice.number,
                "onet_code": candidate.onet_code,
                "rationale": rationale,
                "confidence": confidence,
            }
        )
    if not choices and not answer.none_fits:
        raise ValidationProblem(
            "no candidate was chosen; choose at least one by number, or set none_fits to true"
        )
    return {"choices": choices[:top_k], "none_fits": bool(answer.none_fits and not choices)}


def labels_from_answer(
    mapped: dict[str, Any], shortlist: Sequence[Candidate], top_k: int
) -> list[dict]:
    """The LLM's choices first (with rationale and confidence), then the embedding ranking
    fills the remaining places (rationale and confidence None: the LLM did not choose them)."""
    by_code = {candidate.onet_code: candidate for candidate in shortlist}
    labels = []
    for choice in mapped["choices"]:
        candidate = by_code[choice["onet_code"]]
        labels.append(_label(candidate, choice["rationale"], choice["confidence"]))
    chosen = {label["onet_code"] for label in labels}
    for candidate in shortlist:
        if len(labels) >= top_k:
            break
        if candidate.onet_code not in chosen:
            labels.append(_label(candidate, None, None))
    if mapped["none_fits"] and labels:
        labels[0]["rationale"] = "the LLM found that no shortlisted occupation fits"
        labels[0]["confidence"] = 0.0
    return labels[:top_k]


def fallback_labels(shortlist: Sequence[Candidate], top_k: int) -> list[dict]:
    return [_label(candidate, None, None) for candidate in shortlist[:top_k]]


def _label(candidate: Candidate, rationale: str | None, confidence: float | None) -> dict:
    return {
        "onet_code": candidate.onet_code,
        "onet_title": candidate.onet_title,
        "score": candidate.score,
        "rationale": rationale,
        "confidence": confidence,
    }


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300]


# -- the reranker ----------------------------------------------------------------------------------
@dataclass
class _Attempts:
    """Counters for one call across its HTTP requests."""

    http: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    validation_retries: int = 0
    transport: dict[str, int] = field(default_factory=lambda: {"transport": 0, "rate_limit": 0})

    @property
    def transport_retries(self) -> int:
        return self.transport["transport"] + self.transport["rate_limit"]


class Reranker:
    """Picks and ranks the final top K from each posting's shortlist with an LLM behind any
    OpenAI-compatible endpoint. See the module docstring for the contract."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        taxonomy: Taxonomy | None = None,
        client: openai.OpenAI | None = None,
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
        self.meter = CostMeter(settings.max_cost_usd)
        self.transport = TransportPolicy(settings)
        self.mode = MODES[0] if settings.structured_output == "auto" else settings.structured_output
        self._mode_lock = threading.Lock()
        # The key goes to the client only; local servers accept any non-empty key.
        self.client = client or openai.OpenAI(
            api_key=settings.openai_api_key or "not-needed",
            base_url=settings.openai_base_url,
            timeout=settings.llm_timeout_s,
            max_retries=0,  # tenacity owns retries
        )

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
        stop = threading.Event()

        def work(item: tuple) -> RerankResult | None:
            posting, shortlist = item
            if stop.is_set():
                return None
            try:
                result = self.rerank_one(Posting(*posting), list(shortlist), top_k, run_id)
            except Exception:
                stop.set()
                raise
            if on_result is not None:
                on_result(result)
            return result

        items = list(zip(postings, shortlists, strict=True))
        workers = max(1, self.settings.llm_concurrency)
        if workers == 1 or len(items) <= 1:
            return [work(item) for item in items]  # type: ignore[misc]
        results: list[RerankResult | None] = []
        first_error: Exception | None = None
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rerank")
        try:
            futures = [pool.submit(work, item) for item in items]
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

    def rerank_one(
        self, posting: Posting, shortlist: list[Candidate], top_k: int, run_id: str | None = None
    ) -> RerankResult:
        started = time.perf_counter()
        if not shortlist:
            return RerankResult(labels=[], source="fallback", error="empty shortlist")
        settings = self.settings
        text = f"{posting.title}\n{posting.body}"
        order = candidate_order(shortlist, settings.candidate_order, settings.order_seed, text)
        shown = [shortlist[position] for position in order]
        numbered = [
            {
                "number": number,
                "title": candidate.onet_title,
                "description": self.descriptions.get(candidate.onet_code, ""),
            }
            for number, candidate in enumerate(shown, start=1)
        ]
        messages = self.template.messages(
            posting.title.strip(),
            trim_body(posting.body, settings.llm_body_characters),
            numbered,
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
        call_key = hashlib.sha256(
            json.dumps(
                {
                    "model": settings.llm_model,
                    "prompt_hash": self.template.hash,
                    "schema_hash": schema_hash(top_k),
                    "messages": messages,
                    "parameters": parameters,
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()
        call = {
            "call_key": call_key,
            "model": settings.llm_model,
            "prompt_version": self.template.version,
            "prompt_hash": self.template.hash,
            "schema_hash": schema_hash(top_k),
        }

        hit = self.store.cached_call(call_key)
        if hit is not None and hit["response_parsed"] is not None:
            self.store.record_call({**call, "status": "ok"}, run_id, cached=True)
            return RerankResult(
                labels=labels_from_answer(hit["response_parsed"], shortlist, top_k),
                source="llm",
                call_key=call_key,
                cached=True,
                cost_usd=0.0,
                latency_s=time.perf_counter() - started,
            )

        attempts = _Attempts()
        conversation = list(messages)
        mapped: dict[str, Any] | None = None
        content: str | None = None
        error: str | None = None
        for validation_round in range(settings.llm_validation_retries + 1):
            try:
                content, parsed, problem = self._request(conversation, attempts, top_k)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as failure:
                raise LLMError(f"the LLM endpoint refused the key: {_one_line(failure)}") from None
            except openai.NotFoundError as failure:
                raise LLMError(
                    f"model {settings.llm_model!r} or endpoint not found: {_one_line(failure)}"
                ) from None
            except BudgetError:
                if attempts.http:
                    self._record(
                        call,
                        conversation,
                        parameters,
                        content,
                        None,
                        attempts,
                        started,
                        "error",
                        "stopped by --max-cost-usd",
                        run_id,
                    )
                raise
            except openai.OpenAIError as failure:  # retries spent or a non-retryable 4xx
                error = f"LLM request failed: {_one_line(failure)}"
                break
            try:
                if problem is not None:
                    raise ValidationProblem(problem)
                mapped = map_answer(parse_answer(content, parsed, top_k), shown, top_k)
                error = None
                break
            except ValidationProblem as invalid:
                error = f"invalid answer: {invalid}"
                if validation_round == settings.llm_validation_retries:
                    break
                attempts.validation_retries += 1
                conversation = [
                    *messages,
                    {"role": "assistant", "content": (content or "")[:2000]},
                    {
                        "role": "user",
                        "content": f"That answer could not be used: {invalid}. Reply again with "
                        "JSON only, in the form asked for, choosing candidates by their number.",
                    },
                ]

        status = "ok" if mapped is not None else "error"
        cost = self._record(
            call,
            conversation,
            parameters,
            content,
            mapped,
            attempts,
            started,
            status,
            error,
            run_id,
        )
        common = {
            "call_key": call_key,
            "tokens_in": attempts.tokens_in,
            "tokens_out": attempts.tokens_out,
            "cost_usd": cost,
            "latency_s": time.perf_counter() - started,
            "attempts": attempts.http,
            "validation_retries": attempts.validation_retries,
            "transport_retries": attempts.transport_retries,
        }
        if mapped is None:
            return RerankResult(
                labels=fallback_labels(shortlist, top_k), source="fallback", error=error, **common
            )
        return RerankResult(
            labels=labels_from_answer(mapped, shortlist, top_k), source="llm", **common
        )

    def _record(
        self,
        call: dict,
        conversation: list[dict],
        parameters: dict,
        content: str | None,
        mapped: dict | None,
        attempts: _Attempts,
        started: float,
        status: str,
        error: str | None,
        run_id: str | None,
    ) -> float | None:
        cost = self.prices.cost(self.settings.llm_model, attempts.tokens_in, attempts.tokens_out)
        self.store.record_call(
            {
                **call,
                "request": {
                    "messages": conversation,
                    "parameters": parameters,
                    "structured_output": self.mode,
                },
                "response_raw": content,
                "response_parsed": mapped,
                "tokens_in": attempts.tokens_in,
                "tokens_out": attempts.tokens_out,
                "cost_usd": cost,
                "latency_s": time.perf_counter() - started,
                "status": status,
                "error": error,
                "attempts": attempts.http,
                "validation_retries": attempts.validation_retries,
                "transport_retries": attempts.transport_retries,
            },
            run_id,
            cached=False,
        )
        return cost

    def _request(
        self, messages: list[dict], attempts: _Attempts, top_k: int
    ) -> tuple[str | None, RerankAnswer | None, str | None]:
        """One logical request through the transport retries. Returns the content, the
        client-parsed answer (json_schema mode) and a validation problem, if any."""
        estimate = self._estimate_cost(messages)

        def send(mode: str) -> tuple[str | None, RerankAnswer | None, str | None]:
            self.meter.reserve(estimate)
            actual: float | None = 0.0
            try:
                attempts.http += 1
                raw = self._send(messages, top_k, mode)
                try:
                    body = raw.http_response.json()
                    if not isinstance(body, dict):
                        raise ValueError("not an object")
                except ValueError:
                    text = raw.http_response.text[:500]
                    return text, None, "the server's response was not a JSON chat completion"
                usage = body.get("usage") or {}
                tokens_in = int(usage.get("prompt_tokens") or 0)
                tokens_out = int(usage.get("completion_tokens") or 0)
                attempts.tokens_in += tokens_in
                attempts.tokens_out += tokens_out
                actual = self.prices.cost(self.settings.llm_model, tokens_in, tokens_out)
            finally:
                self.meter.settle(estimate, actual)
            choice = (body.get("choices") or [{}])[0]
            content = (choice.get("message") or {}).get("content")
            if choice.get("finish_reason") == "length":
                return (
                    content,
                    None,
                    (
                        "the reply was cut off at the token limit; keep each rationale under "
                        "20 words"
                    ),
                )
            if mode == "json_object":
                return content, None, None
            try:
                parsed = raw.parse().choices[0].message.parsed
            except (ValidationError, ValueError, openai.OpenAIError):
                return content, None, None  # parse_answer() words the problem for the model
            return content, parsed, None

        retrying = self.transport.retrying(attempts.transport)
        for attempt in retrying:
            with attempt:
                while True:
                    mode = self.mode
                    try:
                        result = send(mode)
                        break
                    except openai.BadRequestError as failure:
                        if not self._degrade(failure, mode):
                            raise
        # tenacity re-raises the last error once a budget is spent
        return result

    def _send(self, messages: list[dict], top_k: int, mode: str) -> Any:
        common = {
            "model": self.settings.llm_model,
            "messages": messages,
            "temperature": self.settings.llm_temperature,
            "max_tokens": self.settings.llm_max_tokens,
        }
        if mode != "json_object":
            return self.client.chat.completions.with_raw_response.parse(
                response_format=answer_model(top_k, mode == "json_schema_bounded"), **common
            )
        return self.client.chat.completions.with_raw_response.create(
            response_format={"type": "json_object"}, **common
        )

    def _degrade(self, failure: openai.BadRequestError, used: str) -> bool:
        """A server that rejects our response_format with a 400 naming it (no maxLength in
        OpenAI's strict mode; no json_schema at all in some servers) gets the next, less
        constrained mode, once for every worker. Only in 'auto' mode."""
        if self.settings.structured_output != "auto" or used == MODES[-1]:
            return False
        if not re.search(r"response_format|json_schema|schema|maxLength", str(failure), re.I):
            return False
        with self._mode_lock:  # another worker may have stepped down already
            if MODES.index(self.mode) <= MODES.index(used):
                self.mode = MODES[MODES.index(used) + 1]
        return True

    def _estimate_cost(self, messages: list[dict]) -> float:
        """Upper bound for one request: ~3 characters a token in, max_tokens out."""
        characters = sum(len(message["content"]) for message in messages)
        cost = self.prices.cost(
            self.settings.llm_model, characters // 3 + 50, self.settings.llm_max_tokens
        )
        return cost or 0.0
