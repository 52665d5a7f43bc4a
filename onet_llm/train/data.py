"""Training data: options and presets, pairs (anchor -> occupation) from O*NET and labelled
postings, the held-out split, and hard negatives mined from the base shortlist. Why each piece
is shaped this way is in `trainer.py`'s docstring."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from onet_llm.errors import InputError, OnetLLMError
from onet_llm.shortlist.encoder import Encoder
from onet_llm.shortlist.index import (
    Representation,
    load_or_build_index,
    normalise_title,
)
from onet_llm.shortlist.text import posting_text
from onet_llm.tables import iter_table_chunks
from onet_llm.taxonomy import Taxonomy
from onet_llm.train.splits import grouped_stratified_split, split_reported_titles_with_validation

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
LONG_SOURCES = frozenset({"task", "posting_body", "pseudo_posting"})
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
    # Issue 13, the whole-taxonomy mix (train/mix.py); 0 = not used.
    noisy_titles_per_occupation: int = 0
    pseudo_postings_per_occupation: int = 0
    posting_cap_per_occupation: int = 0  # 0 = no cap
    # "validation": dev-ads validation picks the checkpoint; "taxonomy": whole-taxonomy
    # validation (reported titles, clean and as written) does, dev ads are a second figure;
    # "blend": the mean of whole-taxonomy MRR@10 and dev-ads recall@20 does (mix.blend_score).
    select_on: str = "validation"


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
    # Issue 13: every occupation drives the model (balanced postings, noisy titles and pseudo
    # postings for all 1,016, selection on whole-taxonomy validation).
    "taxonomy": Preset(
        name="taxonomy",
        alternate_titles_per_occupation=12,
        reported_titles_per_occupation=0,
        tasks_per_occupation=2,
        posting_repeats=10,
        epochs=1,
        batch_size=64,
        learning_rate=1e-4,
        max_seq_length=96,
        evaluations=6,
        noisy_titles_per_occupation=10,
        pseudo_postings_per_occupation=2,
        posting_cap_per_occupation=48,
        select_on="taxonomy",
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
    posting_cap: int | None = None  # override the preset's cap of posting pairs per occupation
    posting_repeats: int | None = None  # override the preset's copies of each posting pair
    select_on: str | None = None  # override what picks the checkpoint (validation/taxonomy/blend)
    # Override the preset's learning rate: a warm start from a fine-tuned model wants a lower one.
    learning_rate: float | None = None


@dataclass(frozen=True)
class TrainingPair:
    anchor: str
    onet_code: str
    # alternate_title / reported_title / task / posting_title / posting_body / noisy_title /
    # pseudo_posting
    source: str

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
    """The reported titles of the seeded validation and test splits: never trained on (nor
    their noisy rewrites), never indexed when they are evaluated."""
    reported = taxonomy.reported_titles
    split = split_reported_titles_with_validation(reported)
    return list(reported.loc[split.isin([TEST_SPLIT, "validation"]).to_numpy(), "title"])


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


def codes_listing_titles(
    taxonomy: Taxonomy, include_occupation_titles: bool = False
) -> dict[str, set[str]]:
    """Normalised alternate or reported title (and, if asked, each occupation's own O*NET
    title) -> every occupation that lists it. An anchor is genuinely ambiguous among these, so
    none of them may be its negative; a prediction at any of them is one O*NET itself allows."""
    codes_of_title: dict[str, set[str]] = {}
    for table in (taxonomy.alternate_titles, taxonomy.reported_titles):
        for code, title in zip(table["onet_code"], table["title"], strict=True):
            codes_of_title.setdefault(normalise_title(title), set()).add(code)
    if include_occupation_titles:
        for occupation in taxonomy.occupations:
            codes_of_title.setdefault(normalise_title(occupation.title), set()).add(occupation.code)
    return codes_of_title


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
    codes_of_title = codes_listing_titles(taxonomy)
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


def source_counts(pairs: Sequence[TrainingPair]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair.source] = counts.get(pair.source, 0) + 1
    return counts
