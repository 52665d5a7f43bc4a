"""Mapping an answer back to the shortlist.

A number off the list, malformed JSON or a cut-off answer is a `ValidationProblem`: the request
is repeated with the problem shown to the model. A valid answer becomes an `Answer` of codes,
and the labels are the LLM's picks first, then the embedding ranking.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from pydantic import ValidationError

from onet_llm.rerank.schema import RerankAnswer, answer_model
from onet_llm.types import Answer, Candidate, Label, Pick

RATIONALE_CHARACTERS = 300
NONE_FITS_RATIONALE = "the LLM found that no shortlisted occupation fits"


class ValidationProblem(Exception):
    """The answer arrived but cannot be used; the message is shown to the model on retry."""


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


def map_answer(answer: RerankAnswer, shown: list[Candidate], top_k: int) -> Answer:
    """Numbers -> codes. Rejects numbers off the list; clamps confidence to [0, 1] and trims
    rationales (grammar engines do not enforce bounds); drops repeated numbers."""
    picks: list[Pick] = []
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
        picks.append(Pick(choice.number, candidate.onet_code, rationale, confidence))
    if not picks and not answer.none_fits:
        raise ValidationProblem(
            "no candidate was chosen; choose at least one by number, or set none_fits to true"
        )
    return Answer(tuple(picks[:top_k]), bool(answer.none_fits and not picks))


def labels_from_answer(answer: Answer, shortlist: Sequence[Candidate], top_k: int) -> list[Label]:
    """The LLM's choices first (with rationale and confidence), then the embedding ranking
    fills the remaining places (rationale and confidence None: the LLM did not choose them)."""
    by_code = {candidate.onet_code: candidate for candidate in shortlist}
    labels = [
        Label.of(by_code[pick.onet_code], pick.rationale, pick.confidence)
        for pick in answer.choices
    ]
    chosen = {label.onet_code for label in labels}
    for candidate in shortlist:
        if len(labels) >= top_k:
            break
        if candidate.onet_code not in chosen:
            labels.append(Label.of(candidate))
    if answer.none_fits and labels:
        first = labels[0]
        labels[0] = Label.of(by_code[first.onet_code], NONE_FITS_RATIONALE, 0.0)
    return labels[:top_k]


def fallback_labels(shortlist: Sequence[Candidate], top_k: int) -> list[Label]:
    return [Label.of(candidate) for candidate in shortlist[:top_k]]
