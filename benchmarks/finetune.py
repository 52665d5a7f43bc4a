"""Base vs fine-tuned models on held-out data, with the product's default index and text.

    python benchmarks/finetune.py --models base:alternate_mean:title default [--out eval/finetune]

A model is `NAME_OR_PATH[:REPRESENTATION:TEXT]`; without the suffix it is measured with the
representation and posting text that are the defaults (or --representation / --text).

Data: dev ads `test` split (never trained on, never used to choose anything) and `validation`
split (never trained on; it picked the checkpoint, the index and the posting text), and the
held-out O*NET reported titles (`test` split) with an index built without them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from onet_llm.eval.metrics import ranking_summary
from onet_llm.shortlist.encoder import Encoder
from onet_llm.shortlist.index import DEFAULT_REPRESENTATION, OccupationIndex, occupation_entries
from onet_llm.shortlist.text import DEFAULT_TEXT_VARIANT, posting_text
from onet_llm.taxonomy import load_taxonomy
from onet_llm.train.card import render_model_card

REPO = Path(__file__).resolve().parent.parent


def ranked_codes(index: OccupationIndex, vectors, codes: list[str]) -> list[list[str]]:
    positions, _ = index.search(vectors, 20)
    return [[codes[p] for p in row if p >= 0] for row in positions]


def measure(model: str, representation: str, text: str) -> dict:
    taxonomy = load_taxonomy()
    started = time.perf_counter()
    encoder = Encoder(model)
    ads = pd.read_csv(REPO / "eval/data/dev_ads.csv", dtype=str, keep_default_na=False)
    reported = pd.read_csv(REPO / "eval/data/reported_titles.csv", dtype=str, keep_default_na=False)
    held_out = reported[reported["split"] == "test"]
    rows = []
    entries = occupation_entries(taxonomy, representation)
    index = OccupationIndex.from_entries(entries, encoder.encode(entries.texts), len(taxonomy))
    for part, frame in (
        ("dev_ads/test", ads[ads["split"] == "test"]),
        ("dev_ads/validation", ads[ads["split"] == "validation"]),
    ):
        texts = [posting_text(t, b, text) for t, b in zip(frame.title, frame.body, strict=True)]
        predictions = ranked_codes(index, encoder.encode(texts), taxonomy.codes)
        rows.append(
            {
                "data": part,
                "n": len(frame),
                **ranking_summary(predictions, list(frame.onet_code), "onet"),
            }
        )
    held_entries = occupation_entries(taxonomy, representation, held_out["title"])
    held_index = OccupationIndex.from_entries(
        held_entries, encoder.encode(held_entries.texts), len(taxonomy)
    )
    predictions = ranked_codes(held_index, encoder.encode(list(held_out.title)), taxonomy.codes)
    rows.append(
        {
            "data": "reported_titles/test",
            "n": len(held_out),
            **ranking_summary(predictions, list(held_out.onet_code), "onet"),
        }
    )
    return {
        "model": model,
        "model_id": encoder.model_id,
        "representation": representation,
        "text": text,
        "seconds": round(time.perf_counter() - started, 1),
        "results": rows,
    }


def markdown(measurements: list[dict]) -> str:
    lines = [
        "| model | index | text | data | n | top-1 | top-5 | recall@20 | MRR@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for measurement in measurements:
        for row in measurement["results"]:
            lines.append(
                f"| {measurement['model']} (`{measurement['model_id']}`) | "
                f"{measurement['representation']} | {measurement['text']} | {row['data']} | "
                f"{int(row['n'])} | {row['top1']:.3f} | {row['top5']:.3f} | {row['top20']:.3f} | "
                f"{row['mrr10']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["base", "default"])
    parser.add_argument("--representation", default=DEFAULT_REPRESENTATION)
    parser.add_argument("--text", default=DEFAULT_TEXT_VARIANT)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--card", type=Path, default=None, help="model folder whose card gets these figures"
    )
    args = parser.parse_args()
    measurements = []
    for spec in args.models:
        model, representation, text = (spec.split(":") + [args.representation, args.text])[:3]
        measurements.append(measure(model, representation, text))
        print(markdown(measurements[-1:]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(measurements, indent=1))
        args.out.with_suffix(".md").write_text(markdown(measurements))
    print(markdown(measurements))
    if args.card:
        card_path = args.card / "training_card.json"
        card = json.loads(card_path.read_text())
        card["evaluation"] = {
            "command": "python benchmarks/finetune.py " + " ".join(sys.argv[1:]),
            "markdown": markdown(measurements),
            "measurements": measurements,
        }
        card_path.write_text(json.dumps(card, indent=2))
        (args.card / "README.md").write_text(render_model_card(card))


if __name__ == "__main__":
    main()
