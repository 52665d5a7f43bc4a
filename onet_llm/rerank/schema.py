"""The schema: the contract between this code and the model.

The model answers with candidate *numbers* (small models copy the first code listed when asked
for codes); `answers.py` maps them back to codes, so nothing outside the shortlist can become a
label. The schema's hash is part of every cache key.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass

from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field, create_model

RATIONALE_SCHEMA_CHARACTERS = 160

# Structured-output modes, most constrained first; "auto" starts at the top and steps down
# when a server rejects a response_format with a 400.
MODES = ("json_schema_bounded", "json_schema", "json_object")


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
    unbounded schema (see `client.OpenAIClient.degrade`)."""
    return create_model(
        "RerankAnswer",
        __base__=RerankAnswer,
        choices=(list[BoundedChoice if bounded else Choice], Field(max_length=top_k)),
    )


@functools.cache
def schema_hash(top_k: int) -> str:
    schema = to_strict_json_schema(answer_model(top_k, bounded=True))
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AnswerSchema:
    """The answer asked for: at most `top_k` choices. What a client sends depends on its
    structured-output mode (`model(bounded=...)`); the hash does not."""

    top_k: int

    def model(self, bounded: bool = False) -> type[RerankAnswer]:
        return answer_model(self.top_k, bounded)

    @property
    def hash(self) -> str:
        return schema_hash(self.top_k)
