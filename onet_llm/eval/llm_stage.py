"""The product's reranker as the evaluation's LLM stage, and what a report says about it.

The LLM modes go through `onet_llm.rerank` and its DuckDB call cache, so a rerun of an
evaluation costs no calls; the result of each call carries the LLM's own picks.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from onet_llm.eval.modes import LLM_MODES, EvalOptions, LLMRow, RerankStage
from onet_llm.rerank.cost import Prices
from onet_llm.taxonomy import Taxonomy
from onet_llm.types import Posting, RerankResult

if TYPE_CHECKING:
    from onet_llm.rerank.reranker import Reranker
    from onet_llm.rerank.stages import InferRerank, Retrieval

InferFactory = Callable[[Any, Sequence[str]], Any]
# A priced model to put token counts of an unpriced (e.g. local) model into dollars, for scale.
REFERENCE_MODEL = "gpt-4o-mini"


def reranker_stage(reranker: Reranker) -> RerankStage:
    """Wrap `onet_llm.rerank.reranker.Reranker` as the evaluation's LLM stage.

    The LLM's own picks and "none fits" come from the answer each result carries (the labels
    the reranker returns are already filled up with the embedding ranking), and a cache hit
    reports the tokens, cost and latency of the call that first produced it."""

    def stage(
        titles: list[str],
        bodies: list[str],
        shortlists: list[list[Any]],
        top_k: int,
        on_row: Callable[[int], None] | None = None,
    ) -> list[LLMRow]:
        postings = [
            Posting(str(i), title, body)
            for i, (title, body) in enumerate(zip(titles, bodies, strict=True))
        ]
        done = [0]
        lock = threading.Lock()

        def count(_result: Any) -> None:
            with lock:
                done[0] += 1
                if on_row is not None:
                    on_row(done[0])

        results = reranker.rerank(postings, shortlists, top_k, None, count)
        return [llm_row(result, reranker.prices, reranker.settings.llm_model) for result in results]

    return stage


def infer_stage(inferrer: InferRerank) -> Any:
    """Wrap `onet_llm.rerank.stages.InferRerank.retrieve` as the evaluation's infer stage
    (`eval.infer_modes.InferStage`): the fused shortlist and the infer call per posting."""

    def stage(
        titles: list[str],
        bodies: list[str],
        shortlists: list[list[Any]],
        on_row: Callable[[int], None] | None = None,
    ) -> list[tuple[list[Any], LLMRow]]:
        postings = [
            Posting(str(i), title, body)
            for i, (title, body) in enumerate(zip(titles, bodies, strict=True))
        ]
        done = [0]
        lock = threading.Lock()

        def count(_result: Any) -> None:
            with lock:
                done[0] += 1
                if on_row is not None:
                    on_row(done[0])

        retrievals = inferrer.retrieve(postings, shortlists, None, count)
        prices, model = inferrer.reranker.prices, inferrer.settings.llm_model
        return [
            (retrieval.shortlist, infer_row(retrieval, prices, model)) for retrieval in retrievals
        ]

    return stage


def batch_costs(
    prices: Prices, model: str, tokens_in: int, tokens_out: int, attempted: bool = True
) -> dict[str, float | None]:
    """The same tokens at the Batch API's rate, for the model and the reference model."""
    if not attempted:
        return {"batch_cost_usd": 0.0, "reference_batch_cost_usd": 0.0}
    return {
        "batch_cost_usd": prices.cost(model, tokens_in, tokens_out, batch=True),
        "reference_batch_cost_usd": prices.cost(REFERENCE_MODEL, tokens_in, tokens_out, batch=True),
    }


def infer_row(retrieval: Retrieval, prices: Prices, model: str) -> LLMRow:
    """One posting's infer call as the evaluation counts it; `predicted` is the fused list."""
    result = retrieval.infer
    first_call = result.first_call if result.cached else {}
    tokens_in = first_call.get("tokens_in", result.tokens_in)
    tokens_out = first_call.get("tokens_out", result.tokens_out)
    inference = result.inference
    return LLMRow(
        source=result.source,
        error=result.error,
        call_key=result.call_key,
        cached=bool(result.cached),
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=prices.cost(model, tokens_in or 0, tokens_out or 0),
        latency_s=first_call.get("latency_s", result.latency_s),
        predicted=[c.onet_code for c in retrieval.shortlist],
        rationale=(
            f"inferred: {'; '.join(inference.titles)}"
            + (f" (major group {inference.major_group})" if inference.major_group else "")
            + (f" - {inference.rationale}" if inference.rationale else "")
            if inference
            else None
        ),
        reference_cost_usd=prices.cost(REFERENCE_MODEL, tokens_in or 0, tokens_out or 0),
        **batch_costs(prices, model, tokens_in or 0, tokens_out or 0),
    )


def llm_row(result: RerankResult, prices: Prices, model: str) -> LLMRow:
    """One posting's rerank result as the evaluation counts it."""
    first_call = result.first_call if result.cached else {}
    tokens_in = first_call.get("tokens_in", result.tokens_in)
    tokens_out = first_call.get("tokens_out", result.tokens_out)
    latency = first_call.get("latency_s", result.latency_s)
    answer = result.answer if result.source == "llm" else None
    first = answer.choices[0] if answer and answer.choices else None
    attempted = result.call_key is not None
    return LLMRow(
        source=result.source,
        error=result.error,
        call_key=result.call_key,
        cached=bool(result.cached),
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=prices.cost(model, tokens_in or 0, tokens_out or 0) if attempted else 0.0,
        latency_s=latency if attempted else None,
        predicted=answer.picks if answer else [],
        rationale=first.rationale if first else None,
        confidence=first.confidence if first else None,
        none_fits=bool(answer and answer.none_fits),
        reference_cost_usd=prices.cost(REFERENCE_MODEL, tokens_in or 0, tokens_out or 0)
        if attempted
        else 0.0,
        **batch_costs(prices, model, tokens_in or 0, tokens_out or 0, attempted),
    )


def llm_description(settings: Any, reranker: Any) -> dict[str, Any]:
    """What a reader needs to know about the LLM stage (never the API key)."""
    return {
        "model": settings.llm_model,
        "endpoint": public_url(settings.openai_base_url)
        or "https://api.openai.com/v1 (openai default)",
        "prompt": f"{reranker.template.version} ({reranker.template.hash[:12]})",
        "candidate_order": settings.candidate_order,
        "temperature": settings.llm_temperature,
        "max_tokens": settings.llm_max_tokens,
        "body_characters": settings.llm_body_characters,
        "structured_output": reranker.mode,
        "price_known": prices_known(reranker, settings.llm_model),
        "reference_model": REFERENCE_MODEL,
    }


def public_url(url: str | None) -> str | None:
    """The endpoint without user:password@ or query string: reports never carry secrets."""
    if not url:
        return None
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def prices_known(reranker: Any, model: str) -> bool:
    return bool(reranker.prices.known(model))


@contextlib.contextmanager
def open_llm_stage(
    settings: Any, options: EvalOptions, taxonomy: Taxonomy
) -> Iterator[tuple[RerankStage | None, InferFactory | None, dict[str, Any] | None]]:
    """The product's reranker over the settings' store, when a mode needs the LLM, and a
    factory for the infer stage (it needs the labeler, opened later, and the titles the
    evaluation holds out, which its examples must never show); the store stays open (it
    caches every call) until the evaluation is done."""
    if not LLM_MODES & set(options.modes):
        yield None, None, None
        return
    from onet_llm.rerank.reranker import Reranker
    from onet_llm.store import Store

    with Store(settings.resolved_store_path) as store:
        reranker = Reranker(settings, store, taxonomy)
        description = llm_description(settings, reranker)

        def infer_factory(labeler: Any, held_out_titles: Sequence[str]) -> Any:
            from onet_llm.rerank.examples import ExamplePool
            from onet_llm.rerank.stages import InferRerank

            pool = None
            if settings.infer_examples > 0:
                pool = ExamplePool.load(
                    labeler.encoder, taxonomy, settings.index_cache_dir, held_out_titles
                )
            stages = InferRerank(reranker, labeler, pool)
            description["infer"] = {
                "prompt": f"{stages.inferrer.template.version} "
                f"({stages.inferrer.template.hash[:12]})",
                "examples": settings.infer_examples,
                "fusion": settings.fusion,
            }
            return infer_stage(stages)

        yield reranker_stage(reranker), infer_factory, description
