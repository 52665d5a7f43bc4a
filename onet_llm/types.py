"""The values that travel between the stages, at the bottom of the import graph.

A posting goes in; the shortlist stage gives it `Candidate`s; the label step (with or without
the LLM) turns those into `Label`s. These are objects from the moment the input is read until
the store or the output writer serialises them: no stage parses another stage's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Posting(NamedTuple):
    posting_id: str
    title: str
    body: str


@dataclass(frozen=True)
class Candidate:
    """One occupation of a shortlist, with its embedding score."""

    onet_code: str
    onet_title: str
    score: float

    def as_record(self) -> dict[str, Any]:
        return {"onet_code": self.onet_code, "onet_title": self.onet_title, "score": self.score}


@dataclass(frozen=True)
class Label:
    """One of a posting's final top K.

    `reranked` says that the LLM stage handled the row: its labels then carry a rationale and a
    confidence (None where the LLM did not choose that label), and so do their records.
    Embedding-only labels are written as the candidate they are."""

    onet_code: str
    onet_title: str
    score: float
    rationale: str | None = None
    confidence: float | None = None
    reranked: bool = False

    @classmethod
    def of(
        cls, candidate: Candidate, rationale: str | None = None, confidence: float | None = None
    ) -> Label:
        """A label chosen in the LLM stage (or its fallback) from a shortlisted candidate."""
        return cls(
            candidate.onet_code, candidate.onet_title, candidate.score, rationale, confidence, True
        )

    @classmethod
    def embedding(cls, candidate: Candidate) -> Label:
        return cls(candidate.onet_code, candidate.onet_title, candidate.score)

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "onet_code": self.onet_code,
            "onet_title": self.onet_title,
            "score": self.score,
        }
        if self.reranked:
            record["rationale"] = self.rationale
            record["confidence"] = self.confidence
        return record


@dataclass(frozen=True)
class Pick:
    """One candidate the LLM chose, mapped from its number back to a code."""

    number: int
    onet_code: str
    rationale: str
    confidence: float | None


@dataclass(frozen=True)
class Answer:
    """The LLM's own, validated answer: its picks, best first, or that none fits."""

    choices: tuple[Pick, ...]
    none_fits: bool

    @property
    def picks(self) -> list[str]:
        return [choice.onet_code for choice in self.choices]

    def as_record(self) -> dict[str, Any]:
        """The form stored as `calls.response_parsed` (and read back by the cache)."""
        return {
            "choices": [
                {
                    "number": choice.number,
                    "onet_code": choice.onet_code,
                    "rationale": choice.rationale,
                    "confidence": choice.confidence,
                }
                for choice in self.choices
            ],
            "none_fits": self.none_fits,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Answer:
        return cls(
            tuple(
                Pick(c["number"], c["onet_code"], c["rationale"], c["confidence"])
                for c in record.get("choices", [])
            ),
            bool(record.get("none_fits")),
        )


@dataclass
class RerankResult:
    """What the LLM stage did for one posting: its labels, where they came from, what it cost,
    and the LLM's own answer (None on a fallback)."""

    labels: list[Label]
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
    answer: Answer | None = None
    # For a cache hit: tokens, cost and latency of the call that first produced the answer.
    first_call: dict[str, Any] = field(default_factory=dict)
    # With `--llm-stages infer,rerank`: the fused shortlist the LLM reranked, and the infer
    # call's result (`rerank.inference.InferResult`; typed Any here, at the bottom of the graph).
    shortlist: list[Candidate] | None = None
    infer: Any = None


@dataclass
class LabelledRow:
    """One input row as the store keeps it: labelled, or carrying an error."""

    row_number: int
    posting_id: str
    title: str
    body: str
    shortlist: list[Candidate] | None = None
    labels: list[Label] | None = None
    source: str = "error"  # embedding | llm | fallback | error
    error: str | None = None
    call_key: str | None = None
    kept: dict[str, str] | None = None  # input columns carried to the output

    @property
    def posting(self) -> Posting:
        return Posting(self.posting_id, self.title, self.body)
