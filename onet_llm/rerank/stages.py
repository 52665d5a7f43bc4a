"""`--llm-stages infer,rerank`: infer -> retrieve -> fuse -> rerank, with the rerank's contract.

1. *infer* (`inference.py`): the LLM names the occupation in plain words, guided by the O*NET
   titles nearest to the posting (`examples.py`);
2. *retrieve*: each inferred title is searched in the same index as the posting;
3. *fuse* (`fusion.py`): the posting's own shortlist and the inferred titles' shortlists
   become one list of the same length (~20), real codes only;
4. *rerank* (`reranker.py`) on the fused list.

`InferRerank.rerank` has the signature of `Reranker.rerank`, so the labelling pipeline takes
either. A failed infer call never drops a row: the posting is reranked on its own shortlist and
its result says so in `error`. Each `RerankResult` carries the fused `shortlist` and the
`infer` result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from onet_llm.rerank.examples import ExamplePool
from onet_llm.rerank.fusion import fuse
from onet_llm.rerank.inference import Inferrer, InferResult
from onet_llm.rerank.reranker import Reranker
from onet_llm.shortlist.text import posting_text
from onet_llm.types import Candidate, Posting, RerankResult

INFER_FALLBACK = "infer failed, reranked the posting's own shortlist"


class Retriever(Protocol):
    """The slice of `label.Labeler` the retrieve step needs: texts -> shortlists."""

    def shortlist(
        self, titles: list[str], bodies: list[str], size: int = 20
    ) -> list[list[Candidate]]: ...


@dataclass
class Retrieval:
    """One posting after infer and retrieve: the fused shortlist and the infer result."""

    shortlist: list[Candidate]
    infer: InferResult
    added: int  # codes in the fused list that the own shortlist did not have


class InferRerank:
    """The two-stage LLM labeller over one `Reranker` (its client, cache, budget, settings)."""

    def __init__(self, reranker: Reranker, retriever: Retriever, examples: ExamplePool | None):
        self.reranker = reranker
        self.settings = reranker.settings
        self.retriever = retriever
        self.examples = examples
        self.inferrer = Inferrer(
            reranker.settings, reranker.store, reranker.client, reranker.prices
        )

    def __getattr__(self, name: str) -> Any:  # prices, template, mode, taxonomy: the rerank's
        return getattr(self.reranker, name)

    def retrieve(
        self,
        postings: Sequence[Posting],
        shortlists: Sequence[Sequence[Candidate]],
        run_id: str | None = None,
        on_result: Callable[[InferResult], None] | None = None,
    ) -> list[Retrieval]:
        """Infer for every posting, search the inferred titles, fuse with the own lists."""
        postings = [Posting(*posting) for posting in postings]
        k = self.settings.infer_examples
        queries = [posting_text(p.title, p.body) for p in postings]
        examples = self.examples.nearest(queries, k) if self.examples else [[] for _ in postings]
        results = self.inferrer.infer(postings, examples, run_id, on_result)
        titles = [list(r.inference.titles) if r.inference else [] for r in results]
        flat = [title for row in titles for title in row]
        size = max((len(own) for own in shortlists), default=20)
        searched = self.retriever.shortlist(flat, [""] * len(flat), size) if flat else []
        retrievals, start = [], 0
        for own, result, row in zip(shortlists, results, titles, strict=True):
            inferred = searched[start : start + len(row)]
            start += len(row)
            fused = fuse(own, inferred, self.settings.fusion, len(own)) if own else []
            added = len({c.onet_code for c in fused} - {c.onet_code for c in own})
            retrievals.append(Retrieval(fused, result, added))
        return retrievals

    def rerank(
        self,
        postings: Sequence[Posting | tuple[str, str, str]],
        shortlists: Sequence[Sequence[Candidate]],
        top_k: int,
        run_id: str | None = None,
        on_result: Callable[[RerankResult], None] | None = None,
    ) -> list[RerankResult]:
        """`Reranker.rerank` on the fused shortlists; each result carries them and the infer
        result, and says in `error` when the infer call failed."""
        retrievals = self.retrieve(postings, shortlists, run_id)  # type: ignore[arg-type]
        fused = [retrieval.shortlist for retrieval in retrievals]
        results = self.reranker.rerank(postings, fused, top_k, run_id, on_result)
        for result, retrieval in zip(results, retrievals, strict=True):
            result.shortlist = retrieval.shortlist
            result.infer = retrieval.infer
            if retrieval.infer.source != "llm":
                note = f"{INFER_FALLBACK} ({retrieval.infer.error})"
                result.error = f"{note}; {result.error}" if result.error else note
        return results
