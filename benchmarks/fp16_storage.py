"""What storing weights in fp16 costs: fp32 weights vs the same weights rounded to fp16
(computed in fp32 either way, as Encoder does), on the dev test ads with a title index.

    python benchmarks/fp16_storage.py [--model base]

The shipped model is stored in fp16 only (its fp32 original is not kept), so by default the
base model's fp32 weights stand in for the rounding error of the same architecture.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from onet_llm.eval.metrics import ranking_summary
from onet_llm.shortlist.encoder import Encoder
from onet_llm.shortlist.index import OccupationIndex, occupation_entries
from onet_llm.shortlist.text import posting_text
from onet_llm.taxonomy import load_taxonomy

REPO = Path(__file__).resolve().parent.parent


def measure(encoder: Encoder, taxonomy, texts: list[str], golds: list[str]):
    entries = occupation_entries(taxonomy, "title")
    index = OccupationIndex.from_entries(entries, encoder.encode(entries.texts), len(taxonomy))
    queries = encoder.encode(texts)
    positions, _ = index.search(queries, 20)
    ranked = [[taxonomy.codes[p] for p in row] for row in positions]
    return queries, ranking_summary(ranked, golds, "onet")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="base")
    args = parser.parse_args()
    taxonomy = load_taxonomy()
    ads = pd.read_csv(REPO / "eval/data/dev_ads.csv", dtype=str, keep_default_na=False)
    test = ads[ads["split"] == "test"]
    texts = [
        posting_text(title, body, "title_body_head")
        for title, body in zip(test["title"], test["body"], strict=True)
    ]
    golds = list(test["onet_code"])
    encoder = Encoder(args.model, light=False)  # rounds the SentenceTransformer's weights
    full, full_scores = measure(encoder, taxonomy, texts, golds)
    with torch.no_grad():
        for parameter in encoder.model.parameters():
            parameter.copy_(parameter.half().float())
    rounded, rounded_scores = measure(encoder, taxonomy, texts, golds)
    for name, summary in (("fp32", full_scores), ("fp16-rounded", rounded_scores)):
        print(name, {key: round(value, 3) for key, value in summary.items()})
    print(
        f"largest vector change {float(np.abs(full - rounded).max()):.2e}, "
        f"lowest cosine {float((full * rounded).sum(axis=1).min()):.7f}"
    )


if __name__ == "__main__":
    main()
