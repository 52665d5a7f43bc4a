"""Throughput and memory of the embedding stage on this machine.

    python benchmarks/throughput.py [--model default] [--rows 8000] [--repeats 3]

1. titles/s: `Labeler.shortlist` (encode + FAISS search) on distinct real titles (O*NET reported
   titles and dev-ad titles), median of `--repeats` runs, batches of 1,000.
2. postings/s: `onet-llm label` end to end (read CSV, encode, search, commit to the DuckDB store,
   write the output) on a CSV of `--rows` postings with bodies; resident memory is sampled after
   every chunk so that growth with the number of rows shows.
Prints medians and ratios against the bars (500 titles/s, 40 postings/s).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from onet_llm.label import LabelOptions, label_file, open_labeler
from onet_llm.settings import Settings
from onet_llm.store import Store

REPO = Path(__file__).resolve().parent.parent


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def real_titles_and_bodies() -> pd.DataFrame:
    ads = pd.read_csv(REPO / "eval/data/dev_ads.csv", dtype=str, keep_default_na=False)
    reported = pd.read_csv(REPO / "eval/data/reported_titles.csv", dtype=str, keep_default_na=False)
    titles = pd.concat([ads["title"], reported["title"]]).drop_duplicates().reset_index(drop=True)
    bodies = ads["body"].to_numpy()
    return pd.DataFrame(
        {"title": titles, "body": [bodies[i % len(bodies)] for i in range(len(titles))]}
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    settings = Settings.load(embedding_model=args.model)
    labeler, index_key = open_labeler(settings.embedding_model, settings.index_cache_dir)
    postings = real_titles_and_bodies()
    titles = postings["title"].tolist()[:5000]
    print(f"model {labeler.encoder.model_id}; {len(titles)} distinct titles")

    rates = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for start in range(0, len(titles), 1000):
            batch = titles[start : start + 1000]
            labeler.shortlist(batch, [""] * len(batch), 20)
        rates.append(len(titles) / (time.perf_counter() - started))
    titles_per_second = statistics.median(rates)
    print(
        f"titles/s (shortlist of 20, median of {args.repeats}): {titles_per_second:,.0f} "
        f"= {titles_per_second / 500:.2f}x the 500/s bar"
    )

    rows = postings.sample(n=args.rows, replace=args.rows > len(postings), random_state=1)
    rows.insert(0, "id", [f"p{i}" for i in range(len(rows))])
    with tempfile.TemporaryDirectory() as folder:
        input_path = Path(folder) / "postings.csv"
        rows.to_csv(input_path, index=False)
        memory: list[float] = []
        with Store(Path(folder) / "store.duckdb") as store:
            started = time.perf_counter()
            summary = label_file(
                labeler,
                store,
                input_path,
                Path(folder) / "out.csv",
                LabelOptions(),
                {},
                index_key,
                lambda done, total: memory.append(resident_mib()),
            )
            seconds = time.perf_counter() - started
    postings_per_second = summary.rows / seconds
    print(
        f"postings/s (label end to end, {summary.rows} rows with bodies, CSV in/out, store): "
        f"{postings_per_second:,.0f} = {postings_per_second / 40:.2f}x the 40/s bar"
    )
    quarter = max(1, len(memory) // 4)
    print(
        "resident memory MiB: after first quarter of chunks "
        f"{statistics.median(memory[1 : quarter + 1]):.0f}, "
        f"last quarter {statistics.median(memory[-quarter:]):.0f}, "
        f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
    )


if __name__ == "__main__":
    main()
