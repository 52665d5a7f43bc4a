"""The LLM client behind a small protocol: `complete(messages, schema, usage) -> Completion`.

`OpenAIClient` talks to any OpenAI-compatible endpoint and owns the transport policy (retries,
backoff, Retry-After), structured-output degradation (a server that rejects our
response_format gets the next, less constrained mode) and the cost meter (the limit is checked
before each request). The reranker only sees `Completion`s, `CompletionError` (this request
failed: fall back) and `LLMError` / `BudgetError` (stop the run). A fake client implementing
the same protocol gives the unit tests a fast tier (tests/rerank/fake_client.py).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai
from pydantic import ValidationError

from onet_llm.errors import LLMError
from onet_llm.rerank.cost import CostMeter, Prices
from onet_llm.rerank.deadline import deadline_http_client
from onet_llm.rerank.redact import Redactor
from onet_llm.rerank.schema import MODES, AnswerSchema, RerankAnswer
from onet_llm.rerank.transport import TransportPolicy
from onet_llm.settings import Settings

CUT_OFF = "the reply was cut off at the token limit; keep each rationale under 20 words"


@dataclass
class Usage:
    """Counters for one call across its HTTP requests (validation retries included). Token
    counts are None ("unknown") once any reply's usage block could not be read."""

    http: int = 0
    validation_retries: int = 0
    cached_tokens: int = 0  # prompt tokens the server served from its prefix cache
    transport: dict[str, int] = field(default_factory=lambda: {"transport": 0, "rate_limit": 0})
    _tokens: list[int | None] = field(default_factory=lambda: [0, 0])

    @property
    def tokens_in(self) -> int | None:
        return self._tokens[0]

    @property
    def tokens_out(self) -> int | None:
        return self._tokens[1]

    def add_tokens(self, tokens_in: int | None, tokens_out: int | None) -> None:
        for position, tokens in enumerate((tokens_in, tokens_out)):
            known = self._tokens[position]
            self._tokens[position] = None if known is None or tokens is None else known + tokens

    @property
    def transport_retries(self) -> int:
        return self.transport["transport"] + self.transport["rate_limit"]


def token_count(usage: object, name: str) -> int | None:
    """A token count from a reply's usage block; None when it is missing or not a count
    (servers send "n/a", strings or no usage at all)."""
    value = usage.get(name) if isinstance(usage, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def cached_token_count(usage: object) -> int:
    """Prompt tokens served from the server's prefix cache
    (`usage.prompt_tokens_details.cached_tokens`); 0 when the server does not say."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    return token_count(details, "cached_tokens") or 0


def reply_message(body: dict) -> tuple[dict | None, str | None]:
    """The first choice's message of a chat completion, or what is wrong with its shape (an
    empty or null `choices`, a choice without a message): a reply of the wrong shape is an
    invalid answer, retried and then fallen back, never a crash."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return None, "the response has no choices"
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        return None, "the response's first choice has no message"
    return {**message, "finish_reason": choice.get("finish_reason")}, None


def describe_failure(error: BaseException, timeout_s: float) -> str:
    """One line for a request that failed for good, worded for the person reading the
    output: HTTP status, time-out or connection failure first."""
    if isinstance(error, openai.APITimeoutError):
        return f"the request timed out after {timeout_s:g} s (ONET_LLM_TIMEOUT)"
    if isinstance(error, openai.APIConnectionError):
        return f"connection failed: {one_line(error.__cause__ or error)}"
    if isinstance(error, openai.APIStatusError):
        body = error.body if isinstance(error.body, dict) else {}
        message = body.get("message") or body.get("error") or str(error)
        return f"HTTP {error.status_code}: {' '.join(str(message).split())[:200]}"
    return one_line(error)


# A 200 whose body is no chat completion (a proxy's page, a base URL that is not an API): a
# fault of the server, not a reply of the model, so it is never cached.
NOT_A_COMPLETION = "the server's response was not a JSON chat completion"


@dataclass(frozen=True)
class Completion:
    """One reply: its text, the client-parsed answer (json_schema modes) and a problem found
    before parsing (not a chat completion, cut off), if any.

    `no_reply`: the problem is that there is no reply of the model to judge (a body that is not
    a chat completion, a completion without a message, a refusal). Such a call is asked again
    on the next run; a reply that fails validation is cached (`cache.failed_status`)."""

    content: str | None
    parsed: RerankAnswer | None = None
    problem: str | None = None
    no_reply: bool = False


def completion_from_body(body: dict, redact: Redactor) -> Completion:
    """A chat completion body as a `Completion` (text redacted, not parsed), or the problem with
    it: the sync client and the Batch API's output lines read replies the same way."""
    message, problem = reply_message(body)
    if message is None:
        return Completion(None, None, problem, no_reply=True)
    content = message.get("content")
    content = redact(content) if isinstance(content, str) else None
    if message.get("refusal"):
        refused = f"the model refused: {redact(str(message['refusal']))[:200]}"
        return Completion(content, None, refused, no_reply=True)
    if message.get("finish_reason") == "length":
        return Completion(content, None, CUT_OFF)
    return Completion(content)


class CompletionError(Exception):
    """This request failed for good (retries spent, a non-retryable 4xx): the posting falls
    back to its embedding ranking. The message is one line."""


class LLMClient(Protocol):
    mode: str  # the structured-output mode in use (the request log records it)

    def complete(self, messages: list[dict], schema: AnswerSchema, usage: Usage) -> Completion: ...


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300]


class OpenAIClient:
    """`LLMClient` over the openai package, with retries, degradation and the cost meter."""

    def __init__(
        self, settings: Settings, prices: Prices, openai_client: openai.OpenAI | None = None
    ) -> None:
        self.settings = settings
        self.prices = prices
        self.meter = CostMeter(settings.max_cost_usd)
        self.transport = TransportPolicy(settings)
        self.mode = MODES[0] if settings.structured_output == "auto" else settings.structured_output
        self._mode_lock = threading.Lock()
        self.redact = Redactor(settings.openai_api_key)
        # The key goes to the client only; local servers accept any non-empty key. The http
        # client bounds each request as a whole (httpx's own timeout bounds each read only).
        self.openai = openai_client or openai.OpenAI(
            api_key=settings.openai_api_key or "not-needed",
            base_url=settings.openai_base_url,
            timeout=settings.llm_timeout_s,
            max_retries=0,  # tenacity owns retries
            http_client=deadline_http_client(settings.llm_timeout_s),
        )

    def complete(self, messages: list[dict], schema: AnswerSchema, usage: Usage) -> Completion:
        """One logical request through the transport retries; misconfiguration (bad key,
        unknown model) is an LLMError, any other failure a CompletionError."""
        redact = self.redact
        try:
            return self._request(messages, schema, usage)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as failure:
            raise LLMError(
                redact(f"the LLM endpoint refused the key: {one_line(failure)}")
            ) from None
        except openai.NotFoundError as failure:
            raise LLMError(
                redact(
                    f"model {self.settings.llm_model!r} or endpoint not found: {one_line(failure)}"
                )
            ) from None
        except openai.OpenAIError as failure:  # retries spent or a non-retryable 4xx
            reason = describe_failure(failure, self.settings.llm_timeout_s)
            raise CompletionError(redact(reason)) from None

    def _request(self, messages: list[dict], schema: AnswerSchema, usage: Usage) -> Completion:
        estimate = self._estimate_cost(messages)
        for attempt in self.transport.retrying(usage.transport):
            with attempt:
                while True:
                    mode = self.mode
                    try:
                        result = self._send_once(messages, schema, mode, estimate, usage)
                        break
                    except openai.BadRequestError as failure:
                        if not self.degrade(failure, mode):
                            raise
        # tenacity re-raises the last error once a budget is spent
        return result

    def _send_once(
        self, messages: list[dict], schema: AnswerSchema, mode: str, estimate: float, usage: Usage
    ) -> Completion:
        self.meter.reserve(estimate)
        actual: float | None = estimate  # unknown usage counts as the estimate against the limit
        try:
            usage.http += 1
            raw = self._send(messages, schema, mode)
            try:
                body = raw.http_response.json()
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError:
                text = self.redact(raw.http_response.text[:500])
                return Completion(text, None, NOT_A_COMPLETION, no_reply=True)
            tokens_in = token_count(body.get("usage"), "prompt_tokens")
            tokens_out = token_count(body.get("usage"), "completion_tokens")
            cached = cached_token_count(body.get("usage"))
            usage.add_tokens(tokens_in, tokens_out)
            usage.cached_tokens += cached
            if tokens_in is not None and tokens_out is not None:
                actual = self.prices.cost(self.settings.llm_model, tokens_in, tokens_out, cached)
        finally:
            self.meter.settle(estimate, actual)
        return self._completion(raw, body, mode)

    def _completion(self, raw: Any, body: dict, mode: str) -> Completion:
        """The reply's text (secrets redacted) and parsed answer, or the problem with it."""
        completion = completion_from_body(body, self.redact)
        if completion.problem is not None or mode == "json_object":
            return completion
        message, _ = reply_message(body)
        if message is None or completion.content != message.get("content"):
            return completion  # redacted text is parsed again from `content`
        try:
            parsed = raw.parse().choices[0].message.parsed
        except (
            ValidationError,
            ValueError,
            TypeError,
            LookupError,
            AttributeError,
            openai.OpenAIError,
        ):
            return completion  # parse_answer() words the problem for the model
        return Completion(completion.content, parsed)

    def _send(self, messages: list[dict], schema: AnswerSchema, mode: str) -> Any:
        common = {
            "model": self.settings.llm_model,
            "messages": messages,
            "temperature": self.settings.llm_temperature,
            "max_tokens": self.settings.llm_max_tokens,
        }
        completions = self.openai.chat.completions.with_raw_response
        if mode != "json_object":
            return completions.parse(
                response_format=schema.model(mode == "json_schema_bounded"), **common
            )
        return completions.create(response_format={"type": "json_object"}, **common)

    def degrade(self, failure: openai.BadRequestError, used: str) -> bool:
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
