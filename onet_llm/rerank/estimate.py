"""Token and cost estimates before anything is sent (`label --llm --dry-run`).

Prompt tokens are estimated from characters: CHARACTERS_PER_TOKEN was measured on the rerank
prompts of the 60 dev ads of eval/reports/dev-ads-test-hybrid-qwen1.5b (312,721 characters of
messages, 60,380 prompt tokens counted by the server, chat template included): 5.2 characters
a token plus a few tokens of template per message. OpenAI's tokenizer was not measured here;
the dry run says the figures are estimates. Completion tokens are the median of this model's
answered calls in the store, or the dev ads' mean (4,751 tokens / 60 answers, top 5).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from onet_llm.rerank.cost import Prices

CHARACTERS_PER_TOKEN = 5.2
MESSAGE_TOKENS = 4  # role and turn markers of a chat template, per message
REPLY_TOKENS = 3  # the assistant turn the server opens
DEFAULT_OUTPUT_TOKENS = 80


def prompt_tokens(messages: list[dict]) -> int:
    """Estimated prompt tokens of one request."""
    characters = sum(len(str(message.get("content") or "")) for message in messages)
    return (
        math.ceil(characters / CHARACTERS_PER_TOKEN)
        + MESSAGE_TOKENS * len(messages)
        + (REPLY_TOKENS)
    )


def flattened(messages: list[dict]) -> str:
    """The messages in the order a server tokenises them: what prefix caching can share."""
    return "".join(f"<{message['role']}>{message.get('content') or ''}" for message in messages)


def common_prefix(first: str, other: str) -> int:
    limit = min(len(first), len(other))
    index = 0
    while index < limit and first[index] == other[index]:
        index += 1
    return index


@dataclass
class DryRun:
    """What a label run would send, and what it would cost."""

    rows: int = 0
    selected: int = 0  # rows the cascade rule sends to the LLM
    cache_hits: int = 0
    requests: int = 0  # distinct requests to send (rows minus cache hits and repeats)
    tokens_in: int = 0
    tokens_out: int = 0
    shared_prefix_tokens: int = 0  # prompt tokens every request starts with
    mean_prompt_tokens: float = 0.0
    cost_sync_usd: float | None = None
    cost_batch_usd: float | None = None
    prices_checked: str = ""

    def per_1000(self, cost: float | None) -> float | None:
        return None if cost is None or not self.rows else cost / self.rows * 1000


def dry_run(
    planned: Iterable[tuple[int, list[dict] | None, str | None, bool]],
    prices: Prices,
    model: str,
    output_tokens: float | None,
) -> DryRun:
    """Count planned rows `(row_number, messages, call_key, cached)` (messages None: the row
    is not sent) and price the requests to send in sync and batch mode."""
    estimate = DryRun(prices_checked=prices.checked)
    seen: set[str] = set()
    reference: str | None = None
    shared = 0
    for _, messages, key, cached in planned:
        estimate.rows += 1
        if messages is None or key is None:
            continue
        estimate.selected += 1
        if cached:
            estimate.cache_hits += 1
            continue
        if key in seen:
            continue
        seen.add(key)
        estimate.requests += 1
        estimate.tokens_in += prompt_tokens(messages)
        text = flattened(messages)
        if reference is None:
            reference, shared = text, len(text)
        else:
            shared = min(shared, common_prefix(reference, text))
    per_request = DEFAULT_OUTPUT_TOKENS if output_tokens is None else output_tokens
    estimate.tokens_out = round(per_request * estimate.requests)
    if estimate.requests:
        estimate.mean_prompt_tokens = estimate.tokens_in / estimate.requests
        estimate.shared_prefix_tokens = math.ceil(shared / CHARACTERS_PER_TOKEN)
    estimate.cost_sync_usd = prices.cost(model, estimate.tokens_in, estimate.tokens_out)
    estimate.cost_batch_usd = prices.cost(
        model, estimate.tokens_in, estimate.tokens_out, batch=True
    )
    return estimate
