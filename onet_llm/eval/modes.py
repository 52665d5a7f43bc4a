"""The three ways of labelling that an evaluation compares, on exactly the same rows.

The shortlist comes from the same embedding stage the product uses; the hybrid goes through the
product's reranker (`llm_stage.py`). The cascade is simulated from the hybrid run rather than
run separately: a row goes to the LLM only when the embedding's top-1 margin (score of
candidate 1 minus candidate 2) is below a threshold, and the LLM's answer for that row is the
one the hybrid run got (the call is cached and identical). That gives accuracy and cost across
every threshold for the price of one run.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from onet_llm.errors import InputError
from onet_llm.eval.datasets import EvalDataset
from onet_llm.eval.metrics import (
    KS,
    accuracy_at,
    hit_ranks,
    percentile,
)

INFER_MODES: frozenset[str] = frozenset({"fused", "infer-hybrid"})
MODES: tuple[str, ...] = ("embedding", "fused", "hybrid", "infer-hybrid", "cascade")
LLM_MODES: frozenset[str] = frozenset({"fused", "hybrid", "infer-hybrid", "cascade"})
RERANK_MODES: frozenset[str] = frozenset({"hybrid", "cascade"})
# Keep the cascade within this much top-1 accuracy (8-digit) of the hybrid, at the lowest cost.
CASCADE_TOLERANCE = 0.01


@dataclass(frozen=True)
class LLMRow:
    """What the LLM stage did for one row (only rows it was asked about)."""

    source: str  # llm | fallback
    error: str | None
    call_key: str | None
    cached: bool
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: float | None
    latency_s: float | None
    predicted: list[str]  # the LLM's own picks, best first (empty: none of the candidates fits)
    rationale: str | None = None
    confidence: float | None = None
    none_fits: bool = False
    reference_cost_usd: float | None = None  # the same tokens at the reference model's price
    # The same tokens sent through the Batch API (its rate), for the model and the reference.
    batch_cost_usd: float | None = None
    reference_batch_cost_usd: float | None = None
    calls: int = 1  # LLM calls behind this row's answer (infer-hybrid: 2)
    cached_calls: int | None = None  # of them from the cache (None: all if `cached`, else 0)

    @property
    def cached_count(self) -> int:
        if self.cached_calls is not None:
            return self.cached_calls
        return self.calls if self.cached else 0


class RerankStage(Protocol):
    """The slice of the product's reranker the evaluation needs: postings + shortlists in,
    one result per posting out (see `onet_llm.rerank`)."""

    def __call__(
        self,
        titles: list[str],
        bodies: list[str],
        shortlists: list[list[Any]],
        top_k: int,
        on_row: Callable[[int], None] | None = None,
    ) -> list[LLMRow]: ...


@dataclass(frozen=True)
class EvalOptions:
    modes: tuple[str, ...] = ("embedding",)
    shortlist_size: int = 20
    llm_top_k: int = 5  # labels the LLM is asked for; deeper ranks come from the shortlist
    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0
    cascade_threshold: float | None = None  # None: the cheapest within CASCADE_TOLERANCE

    def __post_init__(self) -> None:
        unknown = [mode for mode in self.modes if mode not in MODES]
        if unknown or not self.modes:
            raise InputError(
                f"unknown mode {unknown[0] if unknown else '(none)'!r} "
                f"(use a comma-separated list of {', '.join(MODES)})"
            )
        if not 1 <= self.llm_top_k <= self.shortlist_size:
            raise InputError(
                f"--top-k must be between 1 and --shortlist-size ({self.shortlist_size})"
            )
        if self.shortlist_size < max(KS):
            raise InputError(f"--shortlist-size must be at least {max(KS)} to score top-{max(KS)}")
        if self.resamples < 100:
            raise InputError(f"--resamples must be at least 100, got {self.resamples}")


def parse_modes(text: str) -> tuple[str, ...]:
    """'embedding, hybrid' -> ('embedding', 'hybrid'), in the canonical order, no repeats."""
    asked = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [mode for mode in asked if mode not in MODES]
    if unknown or not asked:
        raise InputError(
            f"unknown mode {unknown[0] if unknown else '(none)'!r} "
            f"(use a comma-separated list of {', '.join(MODES)})"
        )
    return tuple(mode for mode in MODES if mode in asked)


def top1_margins(shortlists: Sequence[Sequence[Any]]) -> list[float]:
    """Score of candidate 1 minus candidate 2: the cascade's "the embedding is sure" signal."""
    margins = []
    for shortlist in shortlists:
        if len(shortlist) >= 2:
            margins.append(round(float(shortlist[0].score) - float(shortlist[1].score), 6))
        else:
            margins.append(float("inf"))  # like `--llm-when uncertain`: never sent
    return margins


def complete_ranking(picks: Sequence[str], shortlist_codes: Sequence[str], depth: int) -> list[str]:
    """The LLM's picks, then the rest of the shortlist in embedding order, `depth` long.

    The LLM is asked for its top few labels; deeper ranks (top-10) fall back to the embedding
    order the LLM saw. An empty pick list is an abstention and stays empty."""
    if not picks:
        return []
    ranked = list(dict.fromkeys(picks))
    ranked += [code for code in shortlist_codes if code not in set(ranked)]
    return ranked[:depth]


@dataclass
class ModeOutcome:
    """Per-row predictions of one mode, and the LLM work behind them."""

    mode: str
    predictions: list[list[str]]
    sources: list[str]
    llm_rows: list[LLMRow | None]  # None: the LLM was not asked about this row
    threshold: float | None = None  # cascade only


@dataclass
class EvalRun:
    dataset: EvalDataset
    options: EvalOptions
    settings: dict[str, Any]
    shortlists: list[list[str]]
    shortlist_scores: list[list[float]]
    margins: list[float]
    outcomes: dict[str, ModeOutcome]
    cascade_sweep: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    fused_shortlists: list[list[str]] | None = None  # the infer modes' shortlists
    cascade_base: str | None = None  # the LLM mode the cascade sends rows to


def run_evaluation(
    dataset: EvalDataset,
    labeler: Any,
    options: EvalOptions,
    settings: dict[str, Any],
    rerank: RerankStage | None = None,
    on_progress: Callable[[str], None] | None = None,
    infer: Any = None,
) -> EvalRun:
    """Shortlist every row once, then produce each requested mode's predictions."""
    notify = on_progress or (lambda message: None)
    frame = dataset.frame
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    notify(f"shortlisting {len(frame)} rows")
    candidates = labeler.shortlist(
        list(frame["title"]), list(frame["body"]), options.shortlist_size
    )
    seconds["shortlist"] = time.perf_counter() - started
    shortlists = [[c.onet_code for c in row] for row in candidates]
    scores = [[float(c.score) for c in row] for row in candidates]
    margins = top1_margins(candidates)
    depth = max(KS)

    embedding = ModeOutcome(
        "embedding",
        [codes[:depth] for codes in shortlists],
        ["embedding"] * len(frame),
        [None] * len(frame),
    )
    outcomes: dict[str, ModeOutcome] = {}
    if "embedding" in options.modes:
        outcomes["embedding"] = embedding
    run = EvalRun(dataset, options, settings, shortlists, scores, margins, outcomes)
    run.seconds = seconds

    golds = list(frame["onet_code"])
    llm_outcomes: dict[str, ModeOutcome] = {}
    if RERANK_MODES & set(options.modes):
        if rerank is None:
            raise InputError("the hybrid and cascade modes need an LLM (see --llm-model)")
        notify(f"LLM rerank of {len(frame)} rows (cached calls are free)")
        started = time.perf_counter()
        llm_rows = rerank(
            list(frame["title"]),
            list(frame["body"]),
            candidates,
            options.llm_top_k,
            lambda done: notify(f"LLM rerank: {done}/{len(frame)} rows"),
        )
        seconds["rerank"] = time.perf_counter() - started
        llm_outcomes["hybrid"] = hybrid_outcome(llm_rows, shortlists, depth)
    if INFER_MODES & set(options.modes):
        from onet_llm.eval.infer_modes import run_infer_modes

        llm_outcomes.update(run_infer_modes(run, frame, candidates, options, rerank, infer, notify))
    for mode in ("fused", "hybrid", "infer-hybrid"):
        if mode in options.modes:
            outcomes[mode] = llm_outcomes[mode]
    if "cascade" in options.modes:
        outcomes["cascade"] = cascade_mode(run, embedding, llm_outcomes, golds)
    run.seconds.update(seconds)
    return run


def cascade_mode(
    run: EvalRun, embedding: ModeOutcome, llm_outcomes: dict[str, ModeOutcome], golds: list[str]
) -> ModeOutcome:
    """The cascade over the better LLM mode, at the given threshold or the one chosen here."""
    base = cascade_base(llm_outcomes, golds)
    run.cascade_base = base.mode
    run.cascade_sweep = cascade_sweep(embedding, base, run.margins, golds, run.options)
    threshold = (
        run.options.cascade_threshold
        if run.options.cascade_threshold is not None
        else choose_cascade_threshold(run.cascade_sweep)
    )
    return cascade_outcome(embedding, base, run.margins, threshold)


def cascade_base(llm_outcomes: dict[str, ModeOutcome], golds: list[str]) -> ModeOutcome:
    """The LLM mode the cascade sends uncertain rows to: the better top-1 of the hybrid and
    the infer-hybrid (the hybrid on a tie: one call a row instead of two)."""
    bases = [llm_outcomes[m] for m in ("hybrid", "infer-hybrid") if m in llm_outcomes]
    return max(bases, key=lambda o: accuracy_at(hit_ranks(o.predictions, golds, "onet"), 1))


def hybrid_outcome(llm_rows: list[LLMRow], shortlists: list[list[str]], depth: int) -> ModeOutcome:
    """Every row went to the LLM; a fallback row keeps the embedding ranking."""
    predictions = []
    for result, codes in zip(llm_rows, shortlists, strict=True):
        if result.source == "llm" and result.predicted:
            predictions.append(complete_ranking(result.predicted, codes, depth))
        else:  # a fallback, or "none fits": the product writes the embedding ranking
            predictions.append(codes[:depth])
    return ModeOutcome("hybrid", predictions, [row.source for row in llm_rows], list(llm_rows))


def cascade_outcome(
    embedding: ModeOutcome, hybrid: ModeOutcome, margins: list[float], threshold: float
) -> ModeOutcome:
    """Rows whose margin is below `threshold` take the hybrid's answer, the rest the
    embedding's."""
    sent = [margin < threshold for margin in margins]
    return ModeOutcome(
        "cascade",
        [
            h if s else e
            for s, h, e in zip(sent, hybrid.predictions, embedding.predictions, strict=True)
        ],
        [h if s else "embedding" for s, h in zip(sent, hybrid.sources, strict=True)],
        [r if s else None for s, r in zip(sent, hybrid.llm_rows, strict=True)],
        threshold=threshold,
    )


def cascade_thresholds(margins: Sequence[float]) -> list[float]:
    """Candidate thresholds: send nothing, every decile of the margin, send everything."""
    finite = np.array([m for m in margins if np.isfinite(m)])
    points = {0.0, float("inf")}
    if finite.size:
        points |= {round(float(q), 6) for q in np.quantile(finite, np.linspace(0.1, 0.9, 9))}
        points.add(round(float(finite.max()) + 1e-6, 6))
    return sorted(points)


def cascade_sweep(
    embedding: ModeOutcome,
    hybrid: ModeOutcome,
    margins: list[float],
    golds: list[str],
    options: EvalOptions,
) -> list[dict[str, Any]]:
    """Accuracy and cost of the cascade at each candidate threshold (one point per distinct
    number of rows sent: the lowest threshold that sends them)."""
    points = []
    seen_sent: set[int] = set()
    for threshold in cascade_thresholds(margins):
        outcome = cascade_outcome(embedding, hybrid, margins, threshold)
        ranks = hit_ranks(outcome.predictions, golds, "onet")
        cost = llm_summary(outcome.llm_rows, len(golds))
        if cost["rows_sent"] in seen_sent:
            continue
        seen_sent.add(cost["rows_sent"])
        points.append(
            {
                "threshold": threshold,
                "sent_share": cost["rows_sent"] / len(golds),
                "top1": accuracy_at(ranks, 1),
                "top5": accuracy_at(ranks, 5),
                "rows_sent": cost["rows_sent"],
                "tokens": cost["tokens_in"] + cost["tokens_out"],
                "cost_usd": cost["cost_usd"],
                "cost_per_1000_postings_usd": cost["cost_per_1000_postings_usd"],
                "batch_cost_per_1000_postings_usd": cost["batch_cost_per_1000_postings_usd"],
                "reference_cost_per_1000_postings_usd": cost[
                    "reference_cost_per_1000_postings_usd"
                ],
            }
        )
    return points


def choose_cascade_threshold(sweep: list[dict[str, Any]]) -> float:
    """Lowest-cost threshold whose top-1 is within CASCADE_TOLERANCE of the better of sending
    every row and sending none (so a cascade over an LLM that lowers top-1 sends nothing)."""
    full = max(sweep, key=lambda point: point["sent_share"])
    none = min(sweep, key=lambda point: point["sent_share"])
    target = max(full["top1"], none["top1"])
    good = [p for p in sweep if p["top1"] >= target - CASCADE_TOLERANCE - 1e-12]
    best = min(good, key=lambda point: (point["sent_share"], -point["top1"]))
    return float(best["threshold"])


def known_sum(values: Iterable[float | None]) -> float | None:
    """The sum, or None when any value is unknown (a model without a price)."""
    listed = list(values)
    return None if any(v is None for v in listed) else float(sum(listed))  # type: ignore[arg-type]


def per_1000(cost: float | None, n_rows: int) -> float | None:
    return cost / n_rows * 1000 if cost is not None and n_rows else None


def llm_summary(llm_rows: Sequence[LLMRow | None], n_rows: int) -> dict[str, Any]:
    """Calls, cache hits, tokens, cost and latency of the rows sent to the LLM.

    Tokens, `cost_usd` and latency are those of the call that produced each answer, cache hits
    included (as recorded when the call was made), so a warm cache does not flatter the figures
    and a rerun reports the same; `spent_usd` is what this run actually paid. A cost is None
    when the model has no price; `reference_cost_*` prices the same tokens at a reference
    model's list price, for scale."""
    sent = [row for row in llm_rows if row is not None]
    fresh = [row for row in sent if not row.cached]
    all_calls = sum(row.calls for row in sent)
    cached_calls = sum(row.cached_count for row in sent)
    costs = [row.cost_usd for row in sent]
    cost_known = all(cost is not None for cost in costs)
    cost = float(sum(costs)) if cost_known else None  # type: ignore[arg-type]
    spent_known = all(row.cost_usd is not None for row in fresh)
    references = [row.reference_cost_usd for row in sent]
    reference = (
        float(sum(references))  # type: ignore[arg-type]
        if all(value is not None for value in references)
        else None
    )
    batch = known_sum(row.batch_cost_usd for row in sent)
    reference_batch = known_sum(row.reference_batch_cost_usd for row in sent)
    latencies = [row.latency_s for row in sent if row.latency_s is not None]
    errors = Counter(row.error for row in sent if row.error)
    return {
        "rows_sent": len(sent),
        "calls": all_calls - cached_calls,
        "cache_hits": cached_calls,
        "calls_per_1000_postings": all_calls / n_rows * 1000 if n_rows else None,
        "tokens_per_1000_postings": sum((r.tokens_in or 0) + (r.tokens_out or 0) for r in sent)
        / n_rows
        * 1000
        if n_rows
        else None,
        "fallbacks": sum(row.source == "fallback" for row in sent),
        "none_fits": sum(row.none_fits for row in sent),
        "tokens_in": int(sum(row.tokens_in or 0 for row in sent)),
        "tokens_out": int(sum(row.tokens_out or 0 for row in sent)),
        "cost_usd": cost,
        "spent_usd": float(sum(row.cost_usd for row in fresh)) if spent_known else None,  # type: ignore[misc]
        "cost_per_1000_postings_usd": cost / n_rows * 1000 if cost is not None and n_rows else None,
        "reference_cost_per_1000_postings_usd": reference / n_rows * 1000
        if reference is not None and n_rows
        else None,
        "batch_cost_per_1000_postings_usd": per_1000(batch, n_rows),
        "reference_batch_cost_per_1000_postings_usd": per_1000(reference_batch, n_rows),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_calls": len(latencies),
        "errors": [{"error": error, "rows": count} for error, count in errors.most_common(5)],
    }
