"""Sweep the title share of the `title_blend` index and the posting text, on validation ads.

    python benchmarks/title_blend.py [--model default] [--out eval/title_blend.md]

The fine-tuned model learns to put postings next to the occupation *title*; the mean of all
titles keeps the many names of a job. This measures the mix (weight 0 = `alternate_mean`,
1 = `title`) x posting text. The choice is made on `dev_ads/validation` only (never trained
on); `dev_ads/test` and the held-out reported titles (index built without them) are reported
alongside and never used to choose.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from onet_llm.eval.metrics import ranking_summary
from onet_llm.shortlist.encoder import Encoder
from onet_llm.shortlist.index import OccupationIndex, occupation_entries
from onet_llm.shortlist.text import posting_text
from onet_llm.taxonomy import load_taxonomy

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
TEXTS = ("title", "title_body_head", "title_body")


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def mean_and_title_vectors(encoder: Encoder, taxonomy, excluded=()) -> tuple[np.ndarray, ...]:
    entries = occupation_entries(taxonomy, "alternate_mean", excluded)
    vectors = encoder.encode(entries.texts)
    sums = np.zeros((len(taxonomy), vectors.shape[1]))
    np.add.at(sums, entries.positions, vectors)
    titles = encoder.encode([occupation.title for occupation in taxonomy.occupations])
    return unit_rows(sums), titles


def scores(occupations: np.ndarray, queries: np.ndarray, golds: list[str], codes: list[str]):
    index = OccupationIndex(occupations.astype(np.float32), np.arange(len(codes)), len(codes))
    positions, _ = index.search(queries, 20)
    summary = ranking_summary([[codes[p] for p in row] for row in positions], golds, "onet")
    return f"{summary['top1']:.3f} / {summary['top5']:.3f} / {summary['top20']:.3f} / " + (
        f"{summary['mrr10']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    taxonomy = load_taxonomy()
    encoder = Encoder(args.model)
    ads = pd.read_csv(REPO / "eval/data/dev_ads.csv", dtype=str, keep_default_na=False)
    reported = pd.read_csv(REPO / "eval/data/reported_titles.csv", dtype=str, keep_default_na=False)
    held_out = reported[reported["split"] == "test"]
    means, titles = mean_and_title_vectors(encoder, taxonomy)
    held_means, held_titles = mean_and_title_vectors(encoder, taxonomy, held_out["title"])
    held_queries = encoder.encode(list(held_out["title"]))
    lines = [
        f"# title_blend sweep (model `{encoder.model_id}`)",
        "",
        "top-1 / top-5 / recall@20 / MRR@10 at 8-digit O*NET. Choose on validation only.",
        "",
        "| title weight | text | dev_ads/validation (95) | dev_ads/test (185) "
        "| reported_titles/test (1,578) |",
        "|---|---|---|---|---|",
    ]
    for weight in WEIGHTS:
        occupations = unit_rows(weight * titles + (1 - weight) * means)
        held_occupations = unit_rows(weight * held_titles + (1 - weight) * held_means)
        reported_scores = scores(
            held_occupations, held_queries, list(held_out["onet_code"]), taxonomy.codes
        )
        for text in TEXTS:
            cells = []
            for part in ("validation", "test"):
                frame = ads[ads["split"] == part]
                queries = encoder.encode(
                    [posting_text(t, b, text) for t, b in zip(frame.title, frame.body, strict=True)]
                )
                cells.append(scores(occupations, queries, list(frame.onet_code), taxonomy.codes))
            lines.append(f"| {weight} | {text} | {cells[0]} | {cells[1]} | {reported_scores} |")
            print(lines[-1], flush=True)
    report = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
