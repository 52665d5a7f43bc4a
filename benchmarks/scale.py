"""Large inputs: `--engine ray` against the local engine, and a million-row run, end to end.

    python benchmarks/scale.py engines [--rows 20000] [--repeats 1]
    python benchmarks/scale.py million [--rows 1000000] [--engine local] [--backend onnx-int8]

Each run is the real command (`python -m onet_llm.cli label ...`) in a child process with its
own store, timed from start to exit (model load, Ray start and output writing included), with
the resident memory of the child and every process under it (Ray's raylet, workers and actors)
sampled twice a second.

`engines`: `--rows` postings with bodies (the 645 dev ads, titles numbered so that no two rows
are the same), once per engine per repeat, interleaved; prints rows/s, the ratio ray/local,
peak memory, and whether the two outputs hold the same codes and scores (to 1e-4).

`million`: `--rows` titles (O*NET alternate titles with the seeded noise process of
`onet_llm.train.title_noise`, repeated), through the given engine and backend; prints rows/s,
the memory of the first and the last quarter of the run (median of the samples), its growth,
and the projected time for 10 million rows on this machine and on a 10-node cluster (linear in
nodes: the per-node rate times 10, an upper bound the engine's overhead lowers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parent.parent


def posting_rows(rows: int) -> pd.DataFrame:
    ads = pd.read_csv(REPO / "eval/data/dev_ads.csv", dtype=str, keep_default_na=False)
    picks = ads.iloc[np.arange(rows) % len(ads)].reset_index(drop=True)
    copy = np.arange(rows) // len(ads)
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(rows)],
            "title": [f"{t} {c}" if c else t for t, c in zip(picks["title"], copy, strict=True)],
            "body": picks["body"],
        }
    )


def noisy_title_rows(rows: int) -> pd.DataFrame:
    from onet_llm.taxonomy import load_taxonomy
    from onet_llm.train.title_noise import noise_titles

    titles = load_taxonomy().alternate_titles["title"].tolist()
    out: list[str] = []
    variant = 0
    while len(out) < rows:
        out += [noisy.title for noisy in noise_titles(titles, variant=variant)]
        variant += 1
    return pd.DataFrame({"id": [f"t{i}" for i in range(rows)], "title": out[:rows]})


def tree_rss_mib(process: psutil.Process) -> float:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total / 2**20


def run_label(arguments: list[str], folder: Path) -> dict:
    """One `label` run in a child process: wall seconds and the memory samples."""
    command = [sys.executable, "-m", "onet_llm.cli", "label", *arguments,
               "--store", str(folder / f"store-{time.monotonic_ns()}.duckdb")]  # fmt: skip
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(child.pid)
    samples: list[tuple[float, float]] = []
    while child.poll() is None:
        samples.append((time.perf_counter() - started, tree_rss_mib(watched)))
        time.sleep(0.5)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    return {
        "seconds": time.perf_counter() - started,
        "samples": samples,
        "load": os.getloadavg()[0],
        "summary": stdout.splitlines()[0] if stdout else "",
    }


def quarter_medians(result: dict) -> tuple[float, float]:
    """Median memory of the samples in the first and in the last quarter of a run."""
    quarter = result["seconds"] / 4
    samples = result["samples"]
    first = statistics.median(rss for t, rss in samples if t <= quarter)
    last = statistics.median(rss for t, rss in samples if t >= 3 * quarter)
    return first, last


def same_labels(first: Path, second: Path, top_k: int = 5) -> tuple[int, float]:
    """Rows whose codes differ, and the largest score difference."""
    a, b = pd.read_parquet(first), pd.read_parquet(second)
    assert a["id"].tolist() == b["id"].tolist()
    codes = [f"onet_code_{k}" for k in range(1, top_k + 1)]
    scores = [f"score_{k}" for k in range(1, top_k + 1)]
    differ = int((a[codes].to_numpy() != b[codes].to_numpy()).any(axis=1).sum())
    return differ, float(np.abs(a[scores].to_numpy() - b[scores].to_numpy()).max())


def engines(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        postings = folder / "postings.csv"
        posting_rows(args.rows).to_csv(postings, index=False)
        results: dict[str, list[dict]] = {"local": [], "ray": []}
        for repeat in range(args.repeats):
            for engine in results:
                output = folder / f"{engine}-{repeat}.parquet"
                arguments = [str(postings), "-o", str(output), "--engine", engine]
                results[engine].append(run_label(arguments, folder))
                print(f"{engine} repeat {repeat}: {results[engine][-1]['seconds']:.1f}s, "
                      f"load {results[engine][-1]['load']:.1f}", flush=True)  # fmt: skip
        differ, score_gap = same_labels(folder / "local-0.parquet", folder / "ray-0.parquet")
    rate = {
        engine: statistics.median(args.rows / r["seconds"] for r in runs)
        for engine, runs in results.items()
    }
    print(f"\n{args.rows:,} postings (title + body), {os.cpu_count()} CPUs, "
          f"medians of {args.repeats}\n")  # fmt: skip
    print("| engine | postings/s (wall, start to exit) | memory, MiB (all processes): first "
          "quarter / last quarter / peak |")  # fmt: skip
    print("|---|---:|---|")
    for engine, runs in results.items():
        first, last = quarter_medians(runs[0])
        peak = max(rss for r in runs for _, rss in r["samples"])
        print(f"| {engine} | {rate[engine]:.1f} | {first:,.0f} / {last:,.0f} / {peak:,.0f} |")
    print(f"\nray / local: {rate['ray'] / rate['local']:.2f}x; rows with different codes: "
          f"{differ}; largest score difference {score_gap:.2e}")  # fmt: skip


def million(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        titles = folder / "titles.csv"
        noisy_title_rows(args.rows).to_csv(titles, index=False)
        arguments = [str(titles), "-o", str(folder / "labels.parquet"), "--engine",
                     args.engine, "--encoder-backend", args.backend, "--chunk-size",
                     str(args.chunk_size)]  # fmt: skip
        result = run_label(arguments, folder)
    seconds, samples = result["seconds"], result["samples"]
    first, last = quarter_medians(result)
    rate = args.rows / seconds
    print(json.dumps({"rows": args.rows, "engine": args.engine, "backend": args.backend,
                      "seconds": round(seconds, 1), "rows_per_s": round(rate, 1),
                      "rss_first_quarter_mib": round(first), "rss_last_quarter_mib": round(last),
                      "rss_growth": round(last / first - 1, 4),
                      "peak_mib": round(max(rss for _, rss in samples)),
                      "load_at_end": round(result["load"], 1)}, indent=1))  # fmt: skip
    print(
        f"projected 10,000,000 rows: {1e7 / rate / 3600:.1f} h on this machine "
        f"({os.cpu_count()} CPUs); {1e7 / (10 * rate) / 3600:.2f} h on 10 such nodes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("engines")
    compare.add_argument("--rows", type=int, default=20_000)
    compare.add_argument("--repeats", type=int, default=1)
    big = commands.add_parser("million")
    big.add_argument("--rows", type=int, default=1_000_000)
    big.add_argument("--engine", default="local")
    big.add_argument("--backend", default="onnx-int8")
    big.add_argument("--chunk-size", type=int, default=5000)
    args = parser.parse_args()
    engines(args) if args.command == "engines" else million(args)


if __name__ == "__main__":
    main()
