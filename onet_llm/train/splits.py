"""Seeded, reproducible splits of labelled data.

Dev ads are split into train / validation / test, stratified by O*NET code, with every copy of
the same (case-insensitive) title kept on one side: otherwise a model could be scored on a title
it was trained on. Reported titles are split into train / validation / test per code (test first,
unchanged since the first release; validation carved out of train).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from onet_llm.shortlist.index import normalise_title

SPLIT_SEED = 20261122
DEV_AD_FRACTIONS = {"train": 0.55, "validation": 0.15, "test": 0.30}
REPORTED_TITLE_TEST_FRACTION = 0.2


def grouped_stratified_split(
    labels: pd.Series,
    groups: pd.Series,
    fractions: dict[str, float],
    seed: int = SPLIT_SEED,
) -> pd.Series:
    """Assign each row a split name so that groups never straddle splits and each label's rows
    are spread over the splits in about the given fractions.

    Groups are assigned whole, in a seeded random order, per label (a group spanning labels is
    placed with its most common label), each to the split furthest below its target share.
    """
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"label": labels.to_numpy(), "group": groups.to_numpy()})
    group_label = frame.groupby("group")["label"].agg(lambda values: values.value_counts().index[0])
    group_size = frame.groupby("group").size()
    names = list(fractions)
    targets = np.array([fractions[name] for name in names])
    assignment: dict[str, str] = {}
    for label in sorted(group_label.unique()):
        label_groups = sorted(group_label.index[group_label == label])
        rng.shuffle(label_groups)
        counts = np.zeros(len(names))
        for group in label_groups:
            total = counts.sum() + group_size[group]
            deficit = targets * total - counts
            choice = int(np.argmax(deficit))
            assignment[group] = names[choice]
            counts[choice] += group_size[group]
    return frame["group"].map(assignment).rename("split")


def split_dev_ads(ads: pd.DataFrame, seed: int = SPLIT_SEED) -> pd.Series:
    """Train / validation / test for labelled ads (needs `title` and `onet_code`)."""
    return grouped_stratified_split(
        ads["onet_code"], ads["title"].map(normalise_title), DEV_AD_FRACTIONS, seed
    )


def split_reported_titles(reported: pd.DataFrame, seed: int = SPLIT_SEED) -> pd.Series:
    """Train / test for O*NET reported titles (needs `title` and `onet_code`)."""
    fractions = {"train": 1 - REPORTED_TITLE_TEST_FRACTION, "test": REPORTED_TITLE_TEST_FRACTION}
    return grouped_stratified_split(
        reported["onet_code"], reported["title"].map(normalise_title), fractions, seed
    )


# Share of the reported titles' *train* split carved out as validation (about 16% of all titles):
# choices are made on it, figures are reported on the unchanged test split.
REPORTED_TITLE_VALIDATION_FRACTION = 0.2
VALIDATION_SEED = SPLIT_SEED + 1


def split_reported_titles_with_validation(
    reported: pd.DataFrame, seed: int = SPLIT_SEED
) -> pd.Series:
    """Train / validation / test for O*NET reported titles.

    The test split is exactly `split_reported_titles` (so test figures stay comparable with
    earlier reports); validation is carved out of its train split, again stratified by code and
    grouped by title, with a seed of its own.
    """
    split = split_reported_titles(reported, seed).to_numpy().copy()
    train = split == "train"
    fractions = {
        "train": 1 - REPORTED_TITLE_VALIDATION_FRACTION,
        "validation": REPORTED_TITLE_VALIDATION_FRACTION,
    }
    carved = grouped_stratified_split(
        reported.loc[train, "onet_code"],
        reported.loc[train, "title"].map(normalise_title),
        fractions,
        seed + 1,
    )
    split[train] = carved.to_numpy()
    return pd.Series(split, index=reported.index, name="split")
