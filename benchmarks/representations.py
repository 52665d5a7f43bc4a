"""Measure occupation representations x posting text variants with a given model.

    python benchmarks/representations.py [--model base] [--out eval/representations]

Dev ads (Zhou et al. 2022): choices are made on train+validation ("selection"); the test split
is reported alongside but never used to choose. Reported titles: the test split, with an index
that excludes every held-out reported title (and its exact duplicates) so the figure measures
generalisation, not lookup.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from onet_llm.eval.metrics import ranking_summary
from onet_llm.shortlist.encoder import Encoder
from onet_llm.shortlist.index import REPRESENTATIONS, OccupationIndex, occupation_entries
from onet_llm.shortlist.text import TEXT_VARIANTS, posting_text
from onet_llm.taxonomy import load_taxonomy

REPO = Path(__file__).resolve().parent.parent


class VectorCache:
    """Encode each distinct text once across all the representations being compared."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = [text for text in dict.fromkeys(texts) if text not in self.vectors]
        if missing:
            for text, vector in zip(missing, self.encoder.encode(missing), strict=True):
                self.vectors[text] = vector
        return np.stack([self.vectors[text] for text in texts])


def evaluate(index: OccupationIndex, queries: np.ndarray, golds: list[str], codes: list[str]):
    positions, _ = index.search(queries, 20)
    predictions = [[codes[p] for p in row if p >= 0] for row in positions]
    return {
        level: ranking_summary(predictions, golds, level) for level in ("onet", "detailed", "major")
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="base")
    parser.add_argument("--out", type=Path, default=REPO / "eval" / "representations")
    args = parser.parse_args()

    taxonomy = load_taxonomy()
    encoder = Encoder(args.model)
    encode = VectorCache(encoder)
    ads = pd.read_csv(REPO / "eval/data/dev_ads.csv", dtype=str, keep_default_na=False)
    reported = pd.read_csv(REPO / "eval/data/reported_titles.csv", dtype=str, keep_default_na=False)
    held_out = reported[reported["split"] == "test"]
    ad_parts = {
        "selection": ads[ads["split"] != "test"],
        "test": ads[ads["split"] == "test"],
    }

    results = []
    started = time.perf_counter()
    for representation in REPRESENTATIONS:
        entries = occupation_entries(taxonomy, representation)
        index = OccupationIndex.from_entries(entries, encode(entries.texts), len(taxonomy))
        for variant in TEXT_VARIANTS:
            for part, frame in ad_parts.items():
                texts = [
                    posting_text(t, b, variant)
                    for t, b in zip(frame.title, frame.body, strict=True)
                ]
                scores = evaluate(index, encode(texts), list(frame.onet_code), taxonomy.codes)
                results.append(
                    {
                        "data": f"dev_ads/{part}",
                        "representation": representation,
                        "text": variant,
                        "n": len(frame),
                        **scores,
                    }
                )
        held_entries = occupation_entries(taxonomy, representation, held_out["title"])
        held_index = OccupationIndex.from_entries(
            held_entries, encode(held_entries.texts), len(taxonomy)
        )
        scores = evaluate(
            held_index, encode(list(held_out.title)), list(held_out.onet_code), taxonomy.codes
        )
        results.append(
            {
                "data": "reported_titles/test",
                "representation": representation,
                "text": "title",
                "n": len(held_out),
                **scores,
            }
        )
        print(f"{representation}: done at {time.perf_counter() - started:.0f}s", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": encoder.model_id, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    args.out.with_suffix(".md").write_text(markdown_table(payload))
    print(markdown_table(payload))


def markdown_table(payload: dict) -> str:
    lines = [
        f"# Occupation representations x posting text (model `{payload['model']}`)",
        "",
        "8-digit O*NET accuracy. `dev_ads/selection` = train+validation ads (used to choose);",
        "`dev_ads/test` = held-out test ads (reported, never used to choose);",
        "`reported_titles/test` = held-out O*NET reported titles, index built without them.",
        "",
        "| data | representation | text | n | top-1 | top-5 | recall@20 | MRR@10 "
        "| SOC6 top-1 | major top-1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["results"]:
        onet, soc6, major = row["onet"], row["detailed"], row["major"]
        lines.append(
            f"| {row['data']} | {row['representation']} | {row['text']} | {row['n']} | "
            f"{onet['top1']:.3f} | {onet['top5']:.3f} | {onet['top20']:.3f} | "
            f"{onet['mrr10']:.3f} | "
            f"{soc6['top1']:.3f} | {major['top1']:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
