"""Evaluation: score embedding-only, hybrid (LLM rerank) and cascade labels against gold codes.

Every mode is scored on exactly the same rows, so differences between modes are paired: one
bootstrap resample matrix is drawn per run and reused for every mode and every metric. The
shortlist comes from the same embedding stage the product uses; the LLM modes go through the
product's reranker (and its DuckDB call cache, so a rerun of an evaluation costs no calls).

The cascade is simulated from the hybrid run rather than run separately: a row goes to the LLM
only when the embedding's top-1 margin (score of candidate 1 minus candidate 2) is below a
threshold, and the LLM's answer for that row is the one the hybrid run got (the call is cached
and identical). That gives accuracy and cost across every threshold for the price of one run.

Data is explicit: a shipped dataset from `eval/data/` (with its provenance) or a user file with
a gold `onet_code` column. Reports name the data, its hash, the sample and the seed.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from onet_llm import __version__
from onet_llm.errors import InputError
from onet_llm.metrics import (
    abstain_rate,
    accuracy_at,
    bootstrap_indices,
    bootstrap_interval,
    confusion_counts,
    hit_ranks,
    is_abstention,
    metric_values,
    paired_difference,
    percentile,
    unpaired_difference,
    wilson_interval,
)
from onet_llm.resources import eval_data_file
from onet_llm.tables import file_sha256, iter_table_chunks
from onet_llm.taxonomy import SOC_MAJOR_GROUPS, SocLevel, Taxonomy, soc_code

REPO = Path(__file__).resolve().parent.parent

MODES: tuple[str, ...] = ("embedding", "hybrid", "cascade")
LLM_MODES: frozenset[str] = frozenset({"hybrid", "cascade"})
LEVELS: tuple[SocLevel, ...] = ("onet", "detailed", "major")
LEVEL_NAMES: dict[str, str] = {
    "onet": "8-digit O*NET",
    "detailed": "6-digit SOC",
    "major": "2-digit major group",
}
KS: tuple[int, ...] = (1, 3, 5, 10)
METRICS: tuple[str, ...] = ("top1", "top3", "top5", "top10", "mrr10")
# Keep the cascade within this much top-1 accuracy (8-digit) of the hybrid, at the lowest cost.
CASCADE_TOLERANCE = 0.01
METRICS_SCHEMA_VERSION = 1


# -- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinDataset:
    """An evaluation set shipped in eval/data, with where it came from and what it may be
    used for."""

    name: str
    file: str
    split: str
    description: str
    exclude_titles: bool = False


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "dev-ads-test": BuiltinDataset(
        name="dev-ads-test",
        file="dev_ads.csv",
        split="test",
        description=(
            "Test split of the 645 labelled dev job ads (Zhou et al. 2022, "
            "doi:10.5334/jopd.69): real postings, seeded split stratified by code with "
            "identical titles kept on one side; never used for training or model selection. "
            "Labels are the occupation each ad was collected for, not independent codings, so "
            "top-1 is a noisy lower bound."
        ),
    ),
    "reported-titles-test": BuiltinDataset(
        name="reported-titles-test",
        file="reported_titles.csv",
        split="test",
        description=(
            "Test split of the O*NET 30.1 Sample of Reported Titles (titles only, seeded "
            "split). These titles are part of the taxonomy, so the index is rebuilt without "
            "them (and without any identical alternate title): the figure measures "
            "generalisation, not lookup."
        ),
        exclude_titles=True,
    ),
}
DEFAULT_DATASET = "dev-ads-test"


@dataclass(frozen=True)
class EvalDataset:
    """The rows every mode is scored on, plus everything a reader needs to trust the figures."""

    name: str
    path: Path
    sha256: str
    description: str
    split: str | None
    rows_available: int
    sample: int | None
    seed: int
    exclude_titles: bool
    frame: pd.DataFrame  # row_number, id, title, body, onet_code (all strings but row_number)
    # Every title of the split, sampled or not: the index is the same whatever the sample.
    split_titles: tuple[str, ...] = ()

    @property
    def excluded_titles(self) -> list[str]:
        return list(self.split_titles) if self.exclude_titles else []

    def provenance(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": _display_path(self.path),
            "sha256": self.sha256,
            "description": self.description,
            "split": self.split,
            "rows_available": self.rows_available,
            "rows": len(self.frame),
            "sample": self.sample,
            "seed": self.seed,
            "index_excludes_evaluated_titles": self.exclude_titles,
        }


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def load_dataset(
    data: str | Path | None,
    taxonomy: Taxonomy,
    sample: int | None = None,
    seed: int = 0,
    split: str | None = None,
    exclude_titles: bool | None = None,
) -> EvalDataset:
    """A shipped dataset by name (default: the dev test ads) or a user file with `title` and a
    gold `onet_code` column (optional `body`, `id`, `split`). Bad rows stop the run with a
    one-line error naming the row."""
    data = str(data) if data is not None else DEFAULT_DATASET
    if data in BUILTIN_DATASETS:
        builtin = BUILTIN_DATASETS[data]
        path = eval_data_file(builtin.file)
        if not path.is_file():
            raise InputError(
                f"the shipped dataset {data!r} should be at {path}, which is missing (reinstall "
                "onet-llm, or pass --data FILE)"
            )
        name, description = builtin.name, builtin.description
        split = split if split is not None else builtin.split
        exclude = builtin.exclude_titles if exclude_titles is None else exclude_titles
    else:
        path = Path(data).expanduser()
        name = path.stem
        description = f"user file {path.name}"
        exclude = bool(exclude_titles)
    frame = read_gold_table(path, taxonomy)
    if split is not None:
        if "split" not in frame.columns:
            raise InputError(f"{path}: --split {split!r} given but the file has no 'split' column")
        frame = frame[frame["split"] == split]
        if frame.empty:
            raise InputError(f"{path}: no rows with split {split!r}")
        description += f" (split {split!r})" if name == path.stem else ""
    rows_available = len(frame)
    split_titles = tuple(frame["title"])
    if sample is not None:
        if sample < 1:
            raise InputError(f"--sample must be at least 1, got {sample}")
        if sample < len(frame):
            # Kept in draw order, which is also the order the LLM sees the rows: a smaller
            # sample with the same seed is a prefix of this one, so after an interrupted run
            # `--sample N` for any N up to the rows done is answered from the call cache.
            frame = frame.sample(n=sample, random_state=seed)
    frame = frame.reset_index(drop=True)
    return EvalDataset(
        name=name,
        path=path,
        sha256=file_sha256(path),
        description=description,
        split=split,
        rows_available=rows_available,
        sample=sample if sample is not None and sample < rows_available else None,
        seed=seed,
        exclude_titles=exclude,
        frame=frame[["row_number", "id", "title", "body", "onet_code"]],
        split_titles=split_titles,
    )


def read_gold_table(path: Path, taxonomy: Taxonomy) -> pd.DataFrame:
    """All rows of a CSV/Parquet/JSONL file with gold codes, checked row by row."""
    frame = pd.concat(list(iter_table_chunks(path, 50_000)), ignore_index=True)
    for column in ("title", "onet_code"):
        if column not in frame.columns:
            columns = ", ".join(frame.columns) or "none"
            raise InputError(f"{path}: missing column {column!r} (columns are: {columns})")
    if frame.empty:
        raise InputError(f"{path}: no rows to evaluate")
    frame = frame.copy()
    frame["row_number"] = np.arange(1, len(frame) + 1)
    if "body" not in frame.columns:
        frame["body"] = ""
    ids_given = "id" in frame.columns
    if not ids_given:
        frame["id"] = frame["row_number"].astype(str)
    seen_ids: dict[str, int] = {}
    for row_number, row_id, title, body, code in zip(
        frame["row_number"],
        frame["id"],
        frame["title"],
        frame["body"],
        frame["onet_code"],
        strict=True,
    ):
        where = f"{path}: row {row_number} (id {row_id!r})"
        if not str(title).strip() and not str(body).strip():
            raise InputError(f"{where}: title and body are both empty")
        code = str(code).strip()
        if not code:
            raise InputError(f"{where}: the gold onet_code is empty")
        if code not in taxonomy:
            raise InputError(f"{where}: onet_code {code!r} is not an O*NET 30.1 code")
        if row_id in seen_ids:
            raise InputError(
                f"{where}: id repeats row {seen_ids[row_id]} (ids must be unique so that runs "
                "can be compared row by row)"
            )
        seen_ids[row_id] = int(row_number)
    frame["onet_code"] = frame["onet_code"].str.strip()
    return frame


# -- the modes ---------------------------------------------------------------------------------


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


def run_evaluation(
    dataset: EvalDataset,
    labeler: Any,
    options: EvalOptions,
    settings: dict[str, Any],
    rerank: RerankStage | None = None,
    on_progress: Callable[[str], None] | None = None,
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

    if LLM_MODES & set(options.modes):
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
        hybrid = hybrid_outcome(llm_rows, shortlists, depth)
        if "hybrid" in options.modes:
            outcomes["hybrid"] = hybrid
        if "cascade" in options.modes:
            run.cascade_sweep = cascade_sweep(
                embedding, hybrid, margins, list(frame["onet_code"]), options
            )
            threshold = (
                options.cascade_threshold
                if options.cascade_threshold is not None
                else choose_cascade_threshold(run.cascade_sweep)
            )
            outcomes["cascade"] = cascade_outcome(embedding, hybrid, margins, threshold)
    run.seconds = seconds
    return run


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
            }
        )
    return points


def choose_cascade_threshold(sweep: list[dict[str, Any]]) -> float:
    """Lowest-cost threshold whose top-1 is within CASCADE_TOLERANCE of sending every row."""
    full = max(sweep, key=lambda point: point["sent_share"])
    good = [p for p in sweep if p["top1"] >= full["top1"] - CASCADE_TOLERANCE - 1e-12]
    best = min(good, key=lambda point: (point["sent_share"], -point["top1"]))
    return float(best["threshold"])


# -- scoring -----------------------------------------------------------------------------------


def interval(values: np.ndarray, indices: np.ndarray, confidence: float) -> dict[str, float]:
    low, high = bootstrap_interval(values, indices, confidence)
    return {
        "value": float(np.mean(values)) if len(values) else float("nan"),
        "low": low,
        "high": high,
    }


def llm_summary(llm_rows: Sequence[LLMRow | None], n_rows: int) -> dict[str, Any]:
    """Calls, cache hits, tokens, cost and latency of the rows sent to the LLM.

    Tokens, `cost_usd` and latency are those of the call that produced each answer, cache hits
    included (as recorded when the call was made), so a warm cache does not flatter the figures
    and a rerun reports the same; `spent_usd` is what this run actually paid. A cost is None
    when the model has no price; `reference_cost_*` prices the same tokens at a reference
    model's list price, for scale."""
    sent = [row for row in llm_rows if row is not None]
    fresh = [row for row in sent if not row.cached]
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
    latencies = [row.latency_s for row in sent if row.latency_s is not None]
    errors = Counter(row.error for row in sent if row.error)
    return {
        "rows_sent": len(sent),
        "calls": len(fresh),
        "cache_hits": len(sent) - len(fresh),
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
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_calls": len(latencies),
        "errors": [{"error": error, "rows": count} for error, count in errors.most_common(5)],
    }


def score_run(run: EvalRun, taxonomy: Taxonomy) -> dict[str, Any]:
    """Every figure of the report, as plain JSON-able data (metrics.json)."""
    options = run.options
    golds = list(run.dataset.frame["onet_code"])
    n_rows = len(golds)
    indices = bootstrap_indices(n_rows, options.resamples, options.seed)
    confidence = options.confidence

    shortlist = {
        "size": options.shortlist_size,
        "recall": {
            level: interval(
                metric_values(
                    hit_ranks(run.shortlists, golds, level), f"top{options.shortlist_size}"
                ),
                indices,
                confidence,
            )
            for level in LEVELS
        },
    }
    modes: dict[str, Any] = {}
    per_row_values: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for mode, outcome in run.outcomes.items():
        levels: dict[str, Any] = {}
        per_row_values[mode] = {}
        for level in LEVELS:
            ranks = hit_ranks(outcome.predictions, golds, level)
            per_row_values[mode][level] = {m: metric_values(ranks, m) for m in METRICS}
            levels[level] = {
                m: interval(per_row_values[mode][level][m], indices, confidence) for m in METRICS
            }
        onet_ranks = hit_ranks(outcome.predictions, golds, "onet")
        modes[mode] = {
            "levels": levels,
            "abstain_rate": mode_abstain_rate(outcome),
            "sources": dict(Counter(outcome.sources)),
            "by_major_group": by_major_group(onet_ranks, golds, outcome.predictions, confidence),
            "by_occupation": by_occupation(onet_ranks, golds, outcome.predictions, taxonomy),
            "confusion_major": confusion_counts(golds, outcome.predictions, "major"),
            "llm": llm_summary(outcome.llm_rows, n_rows) if mode in LLM_MODES else None,
            "threshold": outcome.threshold,
        }
    differences = []
    names = list(run.outcomes)
    for i, mode_a in enumerate(names):
        for mode_b in names[i + 1 :]:
            for level in LEVELS:
                for m in METRICS:
                    differences.append(
                        {
                            "a": mode_a,
                            "b": mode_b,
                            "level": level,
                            "metric": m,
                            **paired_difference(
                                per_row_values[mode_a][level][m],
                                per_row_values[mode_b][level][m],
                                indices,
                                confidence,
                            ),
                        }
                    )
    cascade = None
    if run.cascade_sweep:
        cascade = {
            "signal": "top1_margin",
            "rule": (
                "send a row to the LLM when score(candidate 1) - score(candidate 2) < threshold"
            ),
            "tolerance": CASCADE_TOLERANCE,
            "threshold": run.outcomes["cascade"].threshold,
            "threshold_chosen_on_this_data": options.cascade_threshold is None,
            "sweep": run.cascade_sweep,
        }
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "onet_llm_version": __version__,
        "git_commit": _git_commit(),
        "data": run.dataset.provenance(),
        "settings": {**run.settings, "options": asdict(options)},
        "bootstrap": {
            "resamples": options.resamples,
            "seed": options.seed,
            "confidence": confidence,
            "method": "percentile bootstrap over rows; one resample matrix shared by every mode",
        },
        "rows": n_rows,
        "shortlist": shortlist,
        "modes": modes,
        "differences": differences,
        "cascade": cascade,
        "seconds": run.seconds,
    }


def mode_abstain_rate(outcome: ModeOutcome) -> float:
    """Rows the mode declined to label: no labels at all, or the LLM said that no shortlisted
    occupation fits (the product still writes the embedding ranking there, with confidence 0,
    and that ranking is what gets scored)."""
    declined = [row is not None and row.none_fits for row in outcome.llm_rows]
    empty = abstain_rate(outcome.predictions)
    if not any(declined):
        return empty
    return float(
        np.mean(
            [
                flag or is_abstention(predicted)
                for flag, predicted in zip(declined, outcome.predictions, strict=True)
            ]
        )
    )


def by_major_group(
    ranks: list[int | None],
    golds: list[str],
    predictions: list[list[str]],
    confidence: float,
) -> list[dict[str, Any]]:
    """Accuracy per gold major group with counts and a Wilson interval for top-1."""
    major_hits = hit_ranks(predictions, golds, "major")
    out = []
    groups = [soc_code(gold, "major") for gold in golds]
    for group in sorted(set(groups)):
        rows = [i for i, g in enumerate(groups) if g == group]
        members = [ranks[i] for i in rows]
        hits = sum(rank == 1 for rank in members)
        low, high = wilson_interval(hits, len(rows), confidence)
        out.append(
            {
                "major_group": group,
                "title": SOC_MAJOR_GROUPS.get(group, group),
                "n": len(rows),
                "top1_hits": hits,
                "top1": hits / len(rows),
                "top1_low": low,
                "top1_high": high,
                "top5": accuracy_at(members, 5),
                "major_top1": accuracy_at([major_hits[i] for i in rows], 1),
            }
        )
    return out


def by_occupation(
    ranks: list[int | None], golds: list[str], predictions: list[list[str]], taxonomy: Taxonomy
) -> list[dict[str, Any]]:
    """Accuracy per gold occupation with counts and the most frequent wrong top-1."""
    out = []
    for code in sorted(set(golds)):
        rows = [i for i, gold in enumerate(golds) if gold == code]
        members = [ranks[i] for i in rows]
        wrong = Counter(
            predictions[i][0]
            for i in rows
            if not is_abstention(predictions[i]) and predictions[i][0] != code
        )
        confused = wrong.most_common(1)[0] if wrong else None
        out.append(
            {
                "onet_code": code,
                "onet_title": taxonomy.title(code),
                "n": len(rows),
                "top1_hits": sum(rank == 1 for rank in members),
                "top1": accuracy_at(members, 1),
                "top5": accuracy_at(members, 5),
                "most_frequent_wrong_top1": confused[0] if confused else None,
                "most_frequent_wrong_top1_title": taxonomy.title(confused[0])
                if confused and confused[0] in taxonomy
                else None,
                "most_frequent_wrong_top1_rows": confused[1] if confused else 0,
            }
        )
    return out


def prediction_records(run: EvalRun) -> list[dict[str, Any]]:
    """One record per row (predictions.jsonl): what each mode answered and where the gold code
    ranked, so that two runs can be compared row by row later."""
    frame = run.dataset.frame
    records = []
    for i, row in enumerate(frame.itertuples(index=False)):
        record: dict[str, Any] = {
            "row_number": int(row.row_number),
            "id": row.id,
            "title": row.title,
            "onet_code": row.onet_code,
            "shortlist": run.shortlists[i],
            "top1_margin": run.margins[i],
            "modes": {},
        }
        for mode, outcome in run.outcomes.items():
            predicted = outcome.predictions[i]
            llm_row = outcome.llm_rows[i]
            entry: dict[str, Any] = {
                "predicted": predicted,
                "source": outcome.sources[i],
                "ranks": {level: _first_rank(predicted, row.onet_code, level) for level in LEVELS},
            }
            if llm_row is not None:
                entry["llm"] = {
                    key: value for key, value in asdict(llm_row).items() if key != "predicted"
                }
                entry["llm"]["picks"] = llm_row.predicted
            record["modes"][mode] = entry
        records.append(record)
    return records


def _first_rank(predicted: list[str], gold: str, level: SocLevel) -> int | None:
    return hit_ranks([predicted], [gold], level)[0]


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(payload: Any) -> str:
    """JSON with infinities as strings (JSON has none) and numpy scalars as numbers."""
    return json.dumps(jsonable(payload), indent=1, default=_json_default, ensure_ascii=False)


def jsonable(value: Any) -> Any:
    """Plain JSON values: infinities as 'inf' strings, NaN as null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def default_report_dir(dataset: EvalDataset, modes: Sequence[str]) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("eval") / "reports" / f"{dataset.name}-{'-'.join(modes)}-{stamp}"


# -- comparing two runs ------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedRun:
    folder: Path
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]


def load_saved_run(path: Path) -> SavedRun:
    """A report folder written by `onet-llm eval` (or its metrics.json)."""
    folder = path.parent if path.name == "metrics.json" else path
    metrics_path = folder / "metrics.json"
    rows_path = folder / "predictions.jsonl"
    if not metrics_path.is_file():
        raise InputError(f"{path}: not an eval report (no metrics.json there)")
    if not rows_path.is_file():
        raise InputError(f"{path}: the report has no predictions.jsonl to compare row by row")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        rows = [
            json.loads(line)
            for line in rows_path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: cannot read the report ({error.msg})") from None
    return SavedRun(folder, metrics, rows)


def compare_runs(
    run_a: SavedRun, run_b: SavedRun, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """B minus A for every metric of every mode both runs have, with intervals.

    Paired (one resample matrix over the shared rows) when both runs scored the same rows of
    the same data; otherwise each run is resampled on its own and the table says so."""
    same_data = run_a.metrics["data"]["sha256"] == run_b.metrics["data"]["sha256"]
    ids_a = [row["id"] for row in run_a.rows]
    ids_b = [row["id"] for row in run_b.rows]
    paired = same_data and sorted(ids_a) == sorted(ids_b)
    if paired:
        order = {row_id: i for i, row_id in enumerate(ids_a)}
        rows_b = sorted(run_b.rows, key=lambda row: order[row["id"]])
        indices = bootstrap_indices(len(ids_a), resamples, seed)
    else:
        rows_b = run_b.rows
    modes = [mode for mode in run_a.metrics["modes"] if mode in run_b.metrics["modes"]]
    lines = []
    for mode in modes:
        for level in LEVELS:
            for m in METRICS:
                values_a = _saved_values(run_a.rows, mode, level, m)
                values_b = _saved_values(rows_b, mode, level, m)
                if paired:
                    diff = paired_difference(values_a, values_b, indices)
                else:
                    diff = unpaired_difference(values_a, values_b, resamples, seed)
                lines.append(
                    {
                        "mode": mode,
                        "level": level,
                        "metric": m,
                        "a": float(values_a.mean()),
                        "b": float(values_b.mean()),
                        **diff,
                    }
                )
        for key in ("cost_per_1000_postings_usd", "latency_p50_s"):
            llm_a = run_a.metrics["modes"][mode].get("llm") or {}
            llm_b = run_b.metrics["modes"][mode].get("llm") or {}
            if llm_a.get(key) is not None and llm_b.get(key) is not None:
                lines.append(
                    {
                        "mode": mode,
                        "level": "-",
                        "metric": key,
                        "a": llm_a[key],
                        "b": llm_b[key],
                        "difference": llm_b[key] - llm_a[key],
                        "low": None,
                        "high": None,
                        "p_value": None,
                    }
                )
    return {
        "a": str(run_a.folder),
        "b": str(run_b.folder),
        "paired": paired,
        "same_data": same_data,
        "rows_a": len(run_a.rows),
        "rows_b": len(run_b.rows),
        "modes": modes,
        "lines": lines,
    }


def _saved_values(rows: list[dict[str, Any]], mode: str, level: str, metric: str) -> np.ndarray:
    ranks = [row["modes"][mode]["ranks"][level] for row in rows]
    return metric_values(ranks, metric)


# -- one call for the command line -------------------------------------------------------------


def open_eval_labeler(
    model: str, index_cache_dir: Path, taxonomy: Taxonomy, excluded_titles: Sequence[str]
) -> tuple[Any, str]:
    """The product's labeler, over an index that leaves out `excluded_titles` when the data is
    itself made of taxonomy titles (otherwise the evaluation would measure lookup)."""
    from onet_llm.encoder import Encoder
    from onet_llm.index import DEFAULT_REPRESENTATION, index_cache_key, load_or_build_index
    from onet_llm.pipeline import Labeler

    encoder = Encoder(model)
    index = load_or_build_index(
        encoder, taxonomy, index_cache_dir, DEFAULT_REPRESENTATION, excluded_titles
    )
    key = index_cache_key(encoder, taxonomy, DEFAULT_REPRESENTATION, excluded_titles)
    return Labeler(encoder, index, taxonomy), key


def evaluate_to_report(
    dataset: EvalDataset,
    labeler: Any,
    index_key: str,
    options: EvalOptions,
    out_dir: Path,
    rerank: RerankStage | None = None,
    llm_settings: dict[str, Any] | None = None,
    notes: str = "",
    on_progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run every requested mode on the dataset, score it and write the report folder."""
    from onet_llm.eval_report import write_report

    settings = {
        "embedding_model": labeler.encoder.name,
        "embedding_model_id": labeler.encoder.model_id,
        "index_key": index_key,
        "llm": llm_settings if LLM_MODES & set(options.modes) else None,
    }
    run = run_evaluation(dataset, labeler, options, settings, rerank, on_progress)
    if on_progress:
        on_progress("scoring and writing the report")
    metrics = score_run(run, labeler.taxonomy)
    paths = write_report(metrics, prediction_records(run), out_dir, notes)
    return metrics, paths


# -- the product's reranker as the evaluation's LLM stage ----------------------------------------

# A priced model to put token counts of an unpriced (e.g. local) model into dollars, for scale.
REFERENCE_MODEL = "gpt-4o-mini"


def reranker_stage(reranker: Any, store: Any) -> RerankStage:
    """Wrap `onet_llm.rerank.Reranker` as the evaluation's LLM stage.

    The LLM's own picks and "none fits" come from the validated answer stored with the call
    (the labels the reranker returns are already filled up with the embedding ranking), and a
    cache hit reports the tokens, cost and latency of the call that first produced it."""
    from onet_llm.rerank import Posting

    prices = reranker.prices
    model = reranker.settings.llm_model

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
        rows = []
        for result in results:
            record = store.cached_call(result.call_key) if result.call_key else None
            tokens_in = record["tokens_in"] if record else result.tokens_in
            tokens_out = record["tokens_out"] if record else result.tokens_out
            latency = record["latency_s"] if record and result.cached else result.latency_s
            answer = (record or {}).get("response_parsed") or {}
            picks = [choice["onet_code"] for choice in answer.get("choices", [])]
            first = answer.get("choices", [{}])[0] if picks else {}
            attempted = result.call_key is not None
            rows.append(
                LLMRow(
                    source=result.source,
                    error=result.error,
                    call_key=result.call_key,
                    cached=bool(result.cached),
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    cost_usd=prices.cost(model, tokens_in or 0, tokens_out or 0)
                    if attempted
                    else 0.0,
                    latency_s=latency if attempted else None,
                    predicted=picks if result.source == "llm" else [],
                    rationale=first.get("rationale"),
                    confidence=first.get("confidence"),
                    none_fits=bool(answer.get("none_fits")) and result.source == "llm",
                    reference_cost_usd=prices.cost(REFERENCE_MODEL, tokens_in or 0, tokens_out or 0)
                    if attempted
                    else 0.0,
                )
            )
        return rows

    return stage


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
) -> Iterator[tuple[RerankStage | None, dict[str, Any] | None]]:
    """The product's reranker over the settings' store, when a mode needs the LLM; the store
    stays open (it caches every call) until the evaluation is done."""
    if not LLM_MODES & set(options.modes):
        yield None, None
        return
    from onet_llm.rerank import Reranker
    from onet_llm.store import Store

    with Store(settings.resolved_store_path) as store:
        reranker = Reranker(settings, store, taxonomy)
        yield reranker_stage(reranker, store), llm_description(settings, reranker)
