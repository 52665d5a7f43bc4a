"""Seeded, grouped, stratified splits of labelled data."""

import pandas as pd

from onet_llm.train.splits import (
    DEV_AD_FRACTIONS,
    grouped_stratified_split,
    split_dev_ads,
    split_reported_titles,
)


def ads(rows_per_code: int = 30) -> pd.DataFrame:
    codes = ["29-1141.00", "13-2011.00", "15-1252.00"]
    return pd.DataFrame(
        {
            "title": [f"Title {i % 10}" for _ in codes for i in range(rows_per_code)],
            "onet_code": [code for code in codes for _ in range(rows_per_code)],
        }
    )


def test_copies_of_a_title_never_straddle_splits_and_the_split_is_seeded():
    frame = ads()
    frame.loc[::7, "title"] = frame.loc[::7, "title"].str.upper()  # case makes no new title
    split = split_dev_ads(frame)
    assert set(split) == set(DEV_AD_FRACTIONS)
    by_title = pd.DataFrame({"key": frame["title"].str.lower(), "split": split})
    assert (by_title.groupby("key")["split"].nunique() == 1).all()
    assert split.equals(split_dev_ads(frame)) and not split.equals(split_dev_ads(frame, seed=1))


def test_each_label_is_spread_over_the_splits_in_about_the_fractions():
    labels = pd.Series(["a"] * 100 + ["b"] * 100)
    groups = pd.Series(range(200)).astype(str)
    split = grouped_stratified_split(labels, groups, {"train": 0.7, "test": 0.3})
    for label in ("a", "b"):
        shares = split[labels == label].value_counts(normalize=True)
        assert abs(shares["train"] - 0.7) <= 0.02 and abs(shares["test"] - 0.3) <= 0.02


def test_reported_titles_split_into_train_and_test_only():
    split = split_reported_titles(ads(10))
    assert set(split) == {"train", "test"} and len(split) == 30
