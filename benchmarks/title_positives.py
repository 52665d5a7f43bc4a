"""`onet-llm train` with title-to-title positives, an experiment for issue 13 (not shipped:
`eval/taxonomy.md`, "Title-to-title positives").

    python benchmarks/title_positives.py SHARE [onet-llm train options...]
    python benchmarks/title_positives.py 0.5 --preset taxonomy --base-model default \
        --learning-rate 2e-5 --posting-cap 1000 --posting-repeats 20 --select-on blend -o DIR

The trainer pulls every anchor towards its occupation's O*NET title. The fusion index,
however, scores half on the best single title of each occupation, so what it needs is an
occupation's titles close to one another. Here a share (SHARE) of the title anchors is pulled
towards another title of its own occupation instead: an alternate or a train-split reported
title, never a held-out one, never the anchor itself. Such an anchor is then pushed away from a
title of its mined negative occupation. The other anchors, and every posting body and task,
train as before.

The change is `training_datasets`. This script replaces it, then runs the CLI's own `train`
command, so the pairs, hard negatives, checkpoint selection and model card are the product's.
"""

from __future__ import annotations

import random
import sys

import onet_llm.train.trainer as trainer
from onet_llm.shortlist.index import normalise_title
from onet_llm.taxonomy import Taxonomy
from onet_llm.train.data import TrainingPair, held_out_reported_titles
from onet_llm.train.mix import trainable_titles

TITLE_SOURCES = {"alternate_title", "reported_title", "noisy_title", "posting_title"}
SWAP_SEED = 4242


def titles_by_occupation(taxonomy: Taxonomy) -> dict[str, list[tuple[str, str]]]:
    """Occupation code -> its (normalised, written) alternate and reported titles, held-out
    (validation and test) reported titles left out."""
    trainable = trainable_titles(
        taxonomy, held_out_reported_titles(taxonomy), include_occupation_titles=False
    )
    return {
        code: [(normalise_title(title), title) for title in titles]
        for code, titles in trainable.items()
    }


def title_positive_datasets(share: float):
    """A `training_datasets` whose title anchors take a title positive with probability
    `share` (and a title of the negative occupation as their negative)."""

    def training_datasets(pairs: list[TrainingPair], negatives: list[str], taxonomy: Taxonomy):
        from datasets import Dataset, DatasetDict

        rng = random.Random(SWAP_SEED)
        pool = titles_by_occupation(taxonomy)

        def other_title(code: str, anchor: str) -> str | None:
            choices = [title for key, title in pool.get(code, []) if key != anchor]
            return rng.choice(choices) if choices else None

        parts: dict[str, dict[str, list[str]]] = {}
        swapped = 0
        for pair, negative in zip(pairs, negatives, strict=True):
            part = parts.setdefault(
                "long" if pair.is_long else "short",
                {"anchor": [], "positive": [], "negative": []},
            )
            positive, wrong = taxonomy.title(pair.onet_code), taxonomy.title(negative)
            if pair.source in TITLE_SOURCES and rng.random() < share:
                anchor = normalise_title(pair.anchor)
                other = other_title(pair.onet_code, anchor)
                other_wrong = other_title(negative, anchor)
                if other and other_wrong:
                    positive, wrong, swapped = other, other_wrong, swapped + 1
            part["anchor"].append(pair.anchor)
            part["positive"].append(positive)
            part["negative"].append(wrong)
        print(f"title positives: {swapped:,} of {len(pairs):,} pairs", file=sys.stderr, flush=True)
        return DatasetDict({name: Dataset.from_dict(columns) for name, columns in parts.items()})

    return training_datasets


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    share = float(sys.argv[1])
    trainer.training_datasets = title_positive_datasets(share)
    from onet_llm.cli.app import app

    sys.argv = ["onet-llm", "train", *sys.argv[2:]]
    app()


if __name__ == "__main__":
    main()
