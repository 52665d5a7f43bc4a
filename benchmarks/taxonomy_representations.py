"""Centroid vs exemplar vs fusion indexes on whole-taxonomy validation (issue 13).

    python benchmarks/taxonomy_representations.py --models default \
        [--out eval/representations_taxonomy]

Every title vector is encoded once; each dataset then gets its own index without its evaluated
titles (reported-titles and titles-as-written validation: all occupations, held out) and the
full index for the dev ads validation split (32 occupations). Test splits are not read: choices
are made here, figures are reported with `onet-llm eval` on test.

Routes compared, all over the same vectors:
- `title_blend` (centroid; the default before issue 13), `alternate_mean` (plain centroid);
- `alternate_max` (exemplar: best single title per occupation);
- `fusion@w`: w x title_blend score + (1 - w) x best-exemplar score
  (`onet_llm/shortlist/fusion.py`);
- `rrf`: reciprocal-rank fusion (k=60) of title_blend and alternate_max;
- `merged`: the two routes' shortlists interleaved (centroid first), duplicates dropped;
- `softpool`: a soft maximum over each occupation's titles (T x log-sum-exp of similarity / T),
  alone and added to the centroid as fusion adds the best exemplar;
- `+ lexical`: fusion@0.5 plus lambda x the best character n-gram TF-IDF cosine (3 to 5
  characters, word-bounded) between the query's title and any title of the occupation, a
  spelling route beside the dense one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from sklearn.feature_extraction.text import TfidfVectorizer

from onet_llm.eval.metrics import ranking_summary
from onet_llm.resources import eval_data_file
from onet_llm.shortlist.encoder import Encoder
from onet_llm.shortlist.fusion import best_entry_scores, centroid_vectors
from onet_llm.shortlist.index import normalise_title, occupation_entries
from onet_llm.shortlist.text import posting_text
from onet_llm.taxonomy import load_taxonomy

WEIGHTS = (0.25, 0.4, 0.5, 0.6, 0.75)
RRF_K = 60
DEPTH = 20
SOFTPOOL_TEMPERATURE = 0.02
LEXICAL_WEIGHTS = (0.1, 0.2)


def validation_sets() -> list[tuple[str, list[str], list[str], list[str], list[str]]]:
    """(name, query texts, gold codes, titles to leave out of the index, query titles)."""
    reported = pd.read_csv(eval_data_file("reported_titles.csv"), dtype=str, keep_default_na=False)
    reported = reported[reported["split"] == "validation"]
    written = pd.read_csv(eval_data_file("titles_as_written.csv"), dtype=str, keep_default_na=False)
    written = written[written["split"] == "validation"]
    ads = pd.read_csv(eval_data_file("dev_ads.csv"), dtype=str, keep_default_na=False)
    ads = ads[ads["split"] == "validation"]
    ad_texts = [posting_text(t, b) for t, b in zip(ads["title"], ads["body"], strict=True)]
    return [
        (
            "reported-titles-validation",
            list(reported["title"]),
            list(reported["onet_code"]),
            list(reported["title"]),
            list(reported["title"]),
        ),
        (
            "titles-as-written-validation",
            list(written["title"]),
            list(written["onet_code"]),
            list(written["source_title"]),
            list(written["title"]),
        ),
        ("dev-ads-validation", ad_texts, list(ads["onet_code"]), [], list(ads["title"])),
    ]


def top_codes(scores: np.ndarray, codes: list[str], depth: int = DEPTH) -> list[list[str]]:
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return [[codes[p] for p in row] for row in top]


def rrf(*rankings: np.ndarray) -> np.ndarray:
    fused = np.zeros(rankings[0].shape, dtype=np.float64)
    for scores in rankings:
        ranks = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)
        fused += 1 / (RRF_K + 1 + ranks)
    return fused


def merged(first: list[list[str]], second: list[list[str]]) -> list[list[str]]:
    out = []
    for a, b in zip(first, second, strict=True):
        row = list(dict.fromkeys(code for pair in zip(a, b, strict=True) for code in pair))
        out.append(row[:DEPTH])
    return out


def softpool_scores(similarities: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(queries x occupations) T x log-sum-exp(similarity / T) over each occupation's titles."""
    ends = np.r_[starts[1:], similarities.shape[1]]
    pooled = [
        logsumexp(similarities[:, a:b] / SOFTPOOL_TEMPERATURE, axis=1)
        for a, b in zip(starts, ends, strict=True)
    ]
    return np.stack(pooled, axis=1) * SOFTPOOL_TEMPERATURE


def lexical_scores(
    query_titles: list[str], entry_texts: list[str], starts: np.ndarray, titles: list[str]
) -> np.ndarray:
    """(queries x occupations) best character n-gram TF-IDF cosine over the occupation's
    titles (its own title included), fitted on the index's titles only."""
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
    entries = vectorizer.fit_transform(entry_texts + titles)
    similarities = (vectorizer.transform(query_titles) @ entries.T).toarray().astype(np.float32)
    n = len(titles)
    best = np.maximum.reduceat(similarities[:, :-n], starts, axis=1)
    return np.maximum(best, similarities[:, -n:])


def measure(model: str) -> dict:
    taxonomy = load_taxonomy()
    codes = taxonomy.codes
    encoder = Encoder(model)
    started = time.perf_counter()
    everything = occupation_entries(taxonomy, "title_blend")
    vectors = dict(zip(everything.texts, encoder.encode(everything.texts), strict=True))
    encode_seconds = time.perf_counter() - started
    n = len(taxonomy)
    results = []
    for name, texts, golds, excluded, query_titles in validation_sets():
        entries = occupation_entries(taxonomy, "title_blend", excluded)
        matrix = np.stack([vectors[text] for text in entries.texts])
        entry_vectors, positions, titles = matrix[:-n], entries.positions[:-n], matrix[-n:]
        order = np.argsort(positions, kind="stable")
        entry_vectors, positions = entry_vectors[order], positions[order]
        entry_texts = [entries.texts[i] for i in order]
        starts = np.flatnonzero(np.r_[True, positions[1:] != positions[:-1]])
        queries = encoder.encode(texts)
        blend = queries @ centroid_vectors(entry_vectors, positions, titles).T
        mean = queries @ centroid_vectors(entry_vectors, positions, titles, 0.0).T
        exemplar = best_entry_scores(queries, entry_vectors, starts)
        softpool = softpool_scores(queries @ entry_vectors.T, starts)
        lexical = lexical_scores(query_titles, entry_texts, starts, entries.texts[-n:])
        routes = {
            "title_blend (centroid, today)": top_codes(blend, codes),
            "alternate_mean (centroid)": top_codes(mean, codes),
            "alternate_max (exemplar)": top_codes(exemplar, codes),
        }
        for weight in WEIGHTS:
            routes[f"fusion@{weight}"] = top_codes(weight * blend + (1 - weight) * exemplar, codes)
        routes["rrf(title_blend, alternate_max)"] = top_codes(rrf(blend, exemplar), codes)
        routes["merged shortlist"] = merged(
            routes["title_blend (centroid, today)"], routes["alternate_max (exemplar)"]
        )
        routes[f"softpool T={SOFTPOOL_TEMPERATURE}"] = top_codes(softpool, codes)
        routes["0.5 title_blend + 0.5 softpool"] = top_codes(0.5 * blend + 0.5 * softpool, codes)
        routes["lexical alone (char n-grams)"] = top_codes(lexical, codes)
        for weight in LEXICAL_WEIGHTS:
            fused = 0.5 * blend + 0.5 * exemplar + weight * lexical
            routes[f"fusion@0.5 + {weight} lexical"] = top_codes(fused, codes)
        excluded_keys = {normalise_title(t) for t in excluded}
        for route, predictions in routes.items():
            results.append(
                {
                    "data": name,
                    "route": route,
                    "n": len(golds),
                    "excluded_titles": len(excluded_keys),
                    **ranking_summary(predictions, golds, "onet"),
                }
            )
            print(_row(results[-1]), flush=True)
    return {
        "model": model,
        "model_id": encoder.model_id,
        "encode_seconds": round(encode_seconds, 1),
        "results": results,
    }


def _row(row: dict) -> str:
    return (
        f"| {row['data']} | {row['route']} | {int(row['n'])} | {row['top1']:.3f} | "
        f"{row['top5']:.3f} | {row['top20']:.3f} | {row['mrr10']:.3f} |"
    )


def markdown(measurements: list[dict]) -> str:
    lines = []
    for measurement in measurements:
        lines += [
            f"### {measurement['model']} (`{measurement['model_id']}`)",
            "",
            "| data | route | n | top-1 | top-5 | recall@20 | MRR@10 |",
            "|---|---|---|---|---|---|---|",
            *[_row(row) for row in measurement["results"]],
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    measurements = [measure(model) for model in args.models]
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(measurements, indent=1))
        args.out.with_suffix(".md").write_text(markdown(measurements))
    print(markdown(measurements))


if __name__ == "__main__":
    main()
