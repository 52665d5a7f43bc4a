"""Regenerate the evaluation data in eval/data/ from ../shared/data (run once; output committed).

    python eval/make_data.py [--shared ../shared/data]

Writes dev_ads.csv (Zhou et al. 2022 dev ads + a seeded `split` column), reported_titles.csv
(O*NET 30.1 Sample of Reported Titles + `split`: train / validation / test),
titles_as_written.csv (the validation and test reported titles rewritten by the seeded noise
process of `onet_llm/train/title_noise.py`; synthetic) and examples/postings.csv (20 test-split
ads).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from onet_llm.taxonomy import load_taxonomy
from onet_llm.train.splits import split_dev_ads, split_reported_titles_with_validation
from onet_llm.train.title_noise import NOISE_SEED, noise_titles

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()

    ads = pd.read_csv(
        args.shared / "postings" / "zhou2022_dev.csv", dtype=str, keep_default_na=False
    )
    ads["split"] = split_dev_ads(ads)
    columns = ["id", "title", "body", "onet_code", "onet_title", "label_suspect", "split"]
    ads[columns].to_csv(REPO / "eval" / "data" / "dev_ads.csv", index=False)

    reported = load_taxonomy().reported_titles.copy()
    reported["split"] = split_reported_titles_with_validation(reported)
    reported.to_csv(REPO / "eval" / "data" / "reported_titles.csv", index=False)
    written = titles_as_written(reported)
    written.to_csv(REPO / "eval" / "data" / "titles_as_written.csv", index=False)

    # The shipped example: 20 ads from the test split, one or two per code, none label-suspect.
    test = ads[(ads["split"] == "test") & (ads["label_suspect"] != "1")]
    examples = test.groupby("onet_code", group_keys=False).head(1).sample(n=20, random_state=7)
    examples = examples.sort_values("id", key=lambda ids: ids.astype(int))
    examples[["id", "title", "body", "onet_code"]].to_csv(
        REPO / "examples" / "postings.csv", index=False
    )
    print(
        ads["split"].value_counts().to_dict(),
        reported["split"].value_counts().to_dict(),
        written["split"].value_counts().to_dict(),
    )


def titles_as_written(reported: pd.DataFrame) -> pd.DataFrame:
    """The held-out (validation and test) reported titles, each rewritten once by the noise
    process; `source_title` is the clean title the index must leave out."""
    held_out = reported[reported["split"].isin(["validation", "test"])].reset_index(drop=True)
    noisy = noise_titles(list(held_out["title"]), seed=NOISE_SEED)
    return pd.DataFrame(
        {
            "id": [f"w{i + 1}" for i in range(len(held_out))],
            "title": [row.title for row in noisy],
            "source_title": held_out["title"],
            "onet_code": held_out["onet_code"],
            "split": held_out["split"],
            "transformations": ["+".join(row.transformations) for row in noisy],
        }
    )


if __name__ == "__main__":
    main()
