"""Fusing the posting's own shortlist with the shortlists of the titles the LLM inferred.

Every list comes from a search of the same index, so every fused candidate is a real O*NET
code with a real embedding score; the fused list keeps the own list's length (~20). Two ways
are measured on validation (`onet-llm eval --modes fused,...`):

- `rrf`: reciprocal-rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009): a code scores
  sum(1 / (RRF_K + rank)) over the lists it appears in. Ranks only, so the inferred titles'
  (short, clean) queries and the posting's (long, noisy) query count alike.
- `union`: a scored union: a code scores its best cosine over all the lists.

A fused candidate carries its best cosine over the lists as its score: the number a reader of
the output can compare with an embedding-only run.
"""

from __future__ import annotations

from collections.abc import Sequence

from onet_llm.types import Candidate

RRF_K = 60
FUSIONS: tuple[str, ...] = ("rrf", "union")


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
    raise ValueError(f"unknown fusion {method!r} (use one of {', '.join(FUSIONS)})")
