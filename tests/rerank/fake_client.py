"""A fake `LLMClient` for the fast unit tier: no server, no HTTP, scripted replies.

In the manner of simonw/llm's mock model: the reranker talks to it through the same protocol
as to `OpenAIClient` (`complete(messages, schema, usage) -> Completion`), so everything above
the transport (prompt, cache keys, validation retries, mapping, fallback, the store) is the real
code. The real-server tests (`test_rerank.py` with the fault server, `test_llm_local.py` with
SmolLM2) cover the transport itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from onet_llm.rerank.client import Completion, Usage
from onet_llm.rerank.schema import AnswerSchema

Reply = Completion | Exception


def answer(*numbers: int, none_fits: bool = False, confidence: float = 0.8) -> Completion:
    """A reply choosing these candidate numbers, best first."""
    choices = [
        {"number": number, "rationale": f"picked {number}", "confidence": confidence}
        for number in numbers
    ]
    return Completion(json.dumps({"choices": choices, "none_fits": none_fits}))


class FakeClient:
    """Answers each request with `script(messages)`: a Completion, or an exception to raise.
    Every request costs 100 tokens in and 10 out."""

    mode = "json_schema"

    def __init__(self, script: Callable[[list[dict]], Reply]) -> None:
        self.script = script
        self.requests: list[list[dict]] = []

    def complete(self, messages: list[dict], schema: AnswerSchema, usage: Usage) -> Completion:
        self.requests.append(messages)
        usage.http += 1
        usage.add_tokens(100, 10)
        reply = self.script(messages)
        if isinstance(reply, Exception):
            raise reply
        return reply


def replies(*sequence: Reply) -> Callable[[list[dict]], Reply]:
    """A script that gives these replies in turn (the last one from then on)."""
    given = [0]

    def script(_messages: list[dict]) -> Reply:
        reply = sequence[min(given[0], len(sequence) - 1)]
        given[0] += 1
        return reply

    return script
