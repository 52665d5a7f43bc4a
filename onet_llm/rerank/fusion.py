"""Fusing the posting's own shortlist with the shortlists of the titles the LLM inferred.

Every list comes from a search of the same index, so every fused candidate is a real O*NET
code with a real embedding score; the fused list keeps the own list's length (~20). Three ways
are measured on validation (`onet-llm eval --modes fused,...`):

- `reserve` (the default): the own list as it is, except its last `RESERVED_SLOTS` places.
  Those go to the inferred lists' best codes that the own list does not already hold, rank by
  rank across the lists, and the own tail fills whatever is left. The first 17 places never
  change, and so neither do top-1 to top-17 of an embedding-ordered list: the inferred titles
  can only add candidates for a later rerank, never push the embedding's best ones down.
- `rrf`: reciprocal-rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009): a code scores
  sum(1 / (RRF_K + rank)) over the lists it appears in. Ranks only, so the inferred titles'
  (short, clean) queries and the posting's (long, noisy) query count alike.
- `union`: a scored union: a code scores its best cosine over all the lists.

On 100 titles-as-written validation titles, all with the same Qwen2.5-Coder-1.5B answers,
`rrf` and `reserve` both raised recall@20 from 0.91 to 0.95. `rrf` lowered the fused order's
top-1 from 0.61 to 0.54; `reserve` left it at 0.61. `union` reached 0.94
(eval/reports/titles-as-written-validation-fused*-qwen1.5b).

A fused candidate carries its best cosine over the lists as its score: the number a reader of
the output can compare with an embedding-only run.
"""

from __future__ import annotations

from collections.abc import Sequence

from onet_llm.types import Candidate

RRF_K = 60
# One slot per inferred title (the infer prompt asks for up to 3). 2, 3, 5 and 8 were measured
# on validation titles as written: 2 to 5 gave the same recall@20, 8 lost a point.
RESERVED_SLOTS = 3
FUSIONS: tuple[str, ...] = ("reserve", "rrf", "union")


def best_candidates(lists: Sequence[Sequence[Candidate]]) -> dict[str, Candidate]:
    """Each code once, with its best score over the lists."""
    best: dict[str, Candidate] = {}
    for candidates in lists:
        for candidate in candidates:
            known = best.get(candidate.onet_code)
            if known is None or candidate.score > known.score:
                best[candidate.onet_code] = candidate
    return best


def reciprocal_rank_fusion(
    own: Sequence[Candidate], inferred: Sequence[Sequence[Candidate]], size: int, k: int = RRF_K
) -> list[Candidate]:
    lists = [own, *inferred]
    fused: dict[str, float] = {}
    for candidates in lists:
        for rank, candidate in enumerate(candidates, start=1):
            fused[candidate.onet_code] = fused.get(candidate.onet_code, 0.0) + 1.0 / (k + rank)
    best = best_candidates(lists)
    ordered = sorted(fused, key=lambda code: (-fused[code], -best[code].score, code))
    return [best[code] for code in ordered[:size]]


def scored_union(
    own: Sequence[Candidate], inferred: Sequence[Sequence[Candidate]], size: int
) -> list[Candidate]:
    best = best_candidates([own, *inferred])
    ordered = sorted(best.values(), key=lambda c: (-c.score, c.onet_code))
    return ordered[:size]


def reserved_fusion(
    own: Sequence[Candidate],
    inferred: Sequence[Sequence[Candidate]],
    size: int,
    slots: int = RESERVED_SLOTS,
) -> list[Candidate]:
    slots = min(slots, size)
    head = list(own[: size - slots])
    taken = {candidate.onet_code for candidate in head}
    added: list[Candidate] = []
    depth = max((len(candidates) for candidates in inferred), default=0)
    for rank in range(depth):
        for candidates in inferred:
            if len(added) < slots and rank < len(candidates):
                candidate = candidates[rank]
                if candidate.onet_code not in taken:
                    added.append(candidate)
                    taken.add(candidate.onet_code)
    tail = [candidate for candidate in own[size - slots :] if candidate.onet_code not in taken]
    best = best_candidates([own, *inferred])
    return [best[c.onet_code] for c in head + added + tail[: size - len(head) - len(added)]]


def fuse(
    own: Sequence[Candidate],
    inferred: Sequence[Sequence[Candidate]],
    method: str,
    size: int | None = None,
) -> list[Candidate]:
    """The fused shortlist, `size` (default: the own list's length) long; the own list
    unchanged when nothing was inferred."""
    size = size or len(own)
    if not inferred:
        return list(own)[:size]
    if method == "rrf":
        return reciprocal_rank_fusion(own, inferred, size)
    if method == "union":
        return scored_union(own, inferred, size)
    if method == "reserve":
        return reserved_fusion(own, inferred, size)
    raise ValueError(f"unknown fusion {method!r} (use one of {', '.join(FUSIONS)})")
