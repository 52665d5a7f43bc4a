"""One call for the command line: open the product's labeler over the right index, run every
requested mode, score it and write the report folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from onet_llm.errors import InputError
from onet_llm.eval.datasets import EvalDataset
from onet_llm.eval.modes import LLM_MODES, EvalOptions, RerankStage, run_evaluation
from onet_llm.eval.scoring import prediction_records, score_run
from onet_llm.taxonomy import Taxonomy


def open_eval_labeler(
    model: str,
    index_cache_dir: Path,
    taxonomy: Taxonomy,
    excluded_titles: Sequence[str],
    encoder_options: dict[str, Any] | None = None,
    representation: str | None = None,
) -> tuple[Any, str]:
    """The product's labeler, over an index that leaves out `excluded_titles` when the data is
    itself made of taxonomy titles (otherwise the evaluation would measure lookup).
    `representation` measures another index representation (e.g. `fusion`) through the same
    eval; the default is the product's."""
    from onet_llm.label import Labeler
    from onet_llm.shortlist.encoder import Encoder
    from onet_llm.shortlist.index import (
        DEFAULT_REPRESENTATION,
        REPRESENTATIONS,
        index_cache_key,
        load_or_build_index,
    )

    representation = representation or DEFAULT_REPRESENTATION
    if representation not in REPRESENTATIONS:
        raise InputError(
            f"unknown representation {representation!r} (use {', '.join(REPRESENTATIONS)})"
        )
    encoder = Encoder(model, export_cache_dir=index_cache_dir, **(encoder_options or {}))
    index = load_or_build_index(encoder, taxonomy, index_cache_dir, representation, excluded_titles)
    key = index_cache_key(encoder, taxonomy, representation, excluded_titles)
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
    infer: Any = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run every requested mode on the dataset, score it and write the report folder."""
    from onet_llm.eval.report import write_report

    settings = {
        "embedding_model": labeler.encoder.name,
        "embedding_model_id": labeler.encoder.model_id,
        "encoder_backend": labeler.encoder.backend,
        "index_key": index_key,
        "llm": llm_settings if LLM_MODES & set(options.modes) else None,
    }
    run = run_evaluation(dataset, labeler, options, settings, rerank, on_progress, infer)
    if on_progress:
        on_progress("scoring and writing the report")
    metrics = score_run(run, labeler.taxonomy)
    paths = write_report(metrics, prediction_records(run), out_dir, notes)
    return metrics, paths


def default_report_dir(dataset: EvalDataset, modes: Sequence[str]) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("eval") / "reports" / f"{dataset.name}-{'-'.join(modes)}-{stamp}"
