"""Throughput, memory and accuracy of the embedding stage per encoder backend, in one run.

    python benchmarks/throughput.py [--backends torch,onnx,onnx-int8] [--titles 3000]
        [--rows 2000] [--repeats 3] [--batch-sizes 32] [--threads-list 0]
        [--orders sorted] [--accuracy/--no-accuracy]

Every measurement runs in a child process of its own (so that each has its own peak RSS and
no backend warms another's caches), and the children of every backend are interleaved,
repeat by repeat: on a shared machine a burst of load hits all backends alike, and the
ratios to torch in the same run are what count. Each child reports:

1. titles/s: `Labeler.shortlist` (encode + FAISS search) on distinct real titles (dev-ad and
   O*NET reported titles), batches of 1,000.
2. postings/s: `label_file` end to end (read CSV, encode title + body head, search, commit to
   a DuckDB store, write the output) on `--rows` postings with bodies.
3. peak RSS of the child (the model, the index, torch or onnxruntime) and the 1-minute load
   average when it started and ended.

Accuracy (top-1, top-5, shortlist recall@20 at the 8-digit level) of each backend comes from
one child per backend on the dev-ads test split and the reported-titles test split (that one
over an index without its titles, built once by the fp32 ONNX encoder and cached).
`--batch-sizes`, `--threads-list` (0: the library's default) and `--orders sorted,input`
(encode in input order, batch by batch, instead of sorted by length) measure the cheap wins:
every combination is a configuration. The output is markdown tables of medians and ratios to
the first configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from onet_llm.shortlist.encoder import DEFAULT_BATCH_SIZE

REPO = Path(__file__).resolve().parent.parent
DATASETS = ("dev-ads-test", "reported-titles-test")


def real_titles_and_bodies() -> pd.DataFrame:
    ads = pd.read_csv(REPO / "eval/data/dev_ads.csv", dtype=str, keep_default_na=False)
    reported = pd.read_csv(REPO / "eval/data/reported_titles.csv", dtype=str, keep_default_na=False)
    titles = pd.concat([ads["title"], reported["title"]]).drop_duplicates().reset_index(drop=True)
    bodies = ads["body"].to_numpy()
    return pd.DataFrame(
        {"title": titles, "body": [bodies[i % len(bodies)] for i in range(len(titles))]}
    )


def open_worker_labeler(args: argparse.Namespace):
    from onet_llm.label import open_labeler
    from onet_llm.settings import Settings

    settings = Settings.load()
    options = {"backend": args.backend, "threads": args.threads or None}
    options["batch_size"] = args.batch_size
    labeler, index_key = open_labeler("default", settings.index_cache_dir, encoder_options=options)
    labeler.encoder.encode(["warm up the model"])  # loading is not throughput
    if args.order == "input":
        keep_input_order(labeler.encoder)
    return labeler, index_key


def keep_input_order(encoder) -> None:
    """Encode batch by batch in input order: padding to each batch's longest text, as without
    the sort by length both light models do."""
    model = encoder.encoding_model
    sorted_encode = model.encode

    def encode(texts, batch_size=64, **kwargs):
        parts = [
            sorted_encode(texts[start : start + batch_size], batch_size=batch_size, **kwargs)
            for start in range(0, len(texts), batch_size)
        ]
        return np.concatenate(parts)

    model.encode = encode


def titles_per_second(labeler, titles: list[str]) -> float:
    started = time.perf_counter()
    for start in range(0, len(titles), 1000):
        batch = titles[start : start + 1000]
        labeler.shortlist(batch, [""] * len(batch), 20)
    return len(titles) / (time.perf_counter() - started)


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def postings_per_second(
    labeler, index_key: str, postings: pd.DataFrame
) -> tuple[float, list[float]]:
    """Rows per second of `label_file`, and the resident memory after every chunk (so that
    growth with the number of rows shows)."""
    from onet_llm.label import LabelOptions, label_file
    from onet_llm.store import Store

    memory: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        input_path = Path(folder) / "postings.csv"
        postings.to_csv(input_path, index=False)
        with Store(Path(folder) / "store.duckdb") as store:
            started = time.perf_counter()
            summary = label_file(
                labeler, store, input_path, Path(folder) / "out.csv", LabelOptions(), {},
                index_key, lambda done, total: memory.append(resident_mib()),
            )  # fmt: skip
            return summary.rows / (time.perf_counter() - started), memory


def speed_worker(args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()[0]
    labeler, index_key = open_worker_labeler(args)
    postings = real_titles_and_bodies()
    titles = postings["title"].tolist()[: args.titles]
    rows = postings.sample(n=args.rows, replace=args.rows > len(postings), random_state=1)
    rows.insert(0, "id", [f"p{i}" for i in range(len(rows))])
    titles_rate = titles_per_second(labeler, titles)
    postings_rate, memory = postings_per_second(labeler, index_key, rows)
    quarter = max(1, len(memory) // 4)
    return {
        "titles_per_s": titles_rate,
        "postings_per_s": postings_rate,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_first_quarter_mib": statistics.median(memory[1 : quarter + 1] or memory),
        "rss_last_quarter_mib": statistics.median(memory[-quarter:]),
        "load": [load_before, os.getloadavg()[0]],
    }


def prebuild_index(cache: Path, taxonomy, excluded_titles: list[str]) -> None:
    """The index without the evaluation's titles (~60,000 texts), built once for every backend
    by the fp32 ONNX encoder: its vectors equal torch's to 1e-7 (see
    tests/shortlist/test_onnx_encoder.py) at several times the speed on a loaded machine."""
    from onet_llm.shortlist.encoder import Encoder
    from onet_llm.shortlist.index import DEFAULT_REPRESENTATION, load_or_build_index

    encoder = Encoder("default", backend="onnx", export_cache_dir=cache)
    load_or_build_index(encoder, taxonomy, cache, DEFAULT_REPRESENTATION, excluded_titles)


def accuracy_worker(args: argparse.Namespace) -> dict:
    """top-1 / top-5 / recall@20 (8-digit) of the embedding mode on each test split."""
    from onet_llm.eval.datasets import load_dataset
    from onet_llm.eval.evaluate import open_eval_labeler
    from onet_llm.eval.modes import EvalOptions, run_evaluation
    from onet_llm.eval.scoring import score_run
    from onet_llm.settings import Settings
    from onet_llm.taxonomy import load_taxonomy

    taxonomy, cache = load_taxonomy(), Settings.load().index_cache_dir
    out = {}
    for name in DATASETS:
        dataset = load_dataset(name, taxonomy)
        prebuild_index(cache, taxonomy, dataset.excluded_titles)
        labeler, _ = open_eval_labeler(
            "default", cache, taxonomy, dataset.excluded_titles, {"backend": args.backend}
        )
        run = run_evaluation(dataset, labeler, EvalOptions(resamples=100), {})
        metrics = score_run(run, taxonomy)
        levels = metrics["modes"]["embedding"]["levels"]["onet"]
        out[name] = {
            "rows": metrics["rows"],
            "top1": levels["top1"]["value"],
            "top5": levels["top5"]["value"],
            "recall20": metrics["shortlist"]["recall"]["onet"]["value"],
        }
    return out


def child(
    args: argparse.Namespace,
    worker: str,
    backend: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int = 0,
    order: str = "sorted",
) -> dict:
    """Run one measurement in a fresh interpreter; its last stdout line is the JSON result."""
    command = [sys.executable, __file__, "--worker", worker, "--backend", backend,
               "--titles", str(args.titles), "--rows", str(args.rows),
               "--batch-size", str(batch_size), "--threads", str(threads),
               "--order", order]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{worker} {backend} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def variants(args: argparse.Namespace) -> list[tuple[str, int, int, str]]:
    """(backend, batch size, threads, order) of every configuration measured."""
    backends = args.backends.split(",")
    batches = [int(b) for b in args.batch_sizes.split(",")]
    threads = [int(t) for t in args.threads_list.split(",")]
    orders = args.orders.split(",")
    return [(b, n, t, o) for b in backends for n in batches for t in threads for o in orders]


def median_of(results: list[dict], key: str) -> float:
    return statistics.median(result[key] for result in results)


def print_speed_table(measured: dict[tuple, list[dict]]) -> None:
    reference = next(iter(measured.values()))
    base_titles = median_of(reference, "titles_per_s")
    base_postings = median_of(reference, "postings_per_s")
    print("| backend | batch | threads | order | titles/s | x first | postings/s | x first "
          "| peak RSS MiB | RSS first / last quarter of chunks "
          "| load avg (start-end, per child) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (backend, batch, threads, order), results in measured.items():
        titles = median_of(results, "titles_per_s")
        postings = median_of(results, "postings_per_s")
        loads = ", ".join(f"{a:.1f}-{b:.1f}" for a, b in (r["load"] for r in results))
        print(
            f"| {backend} | {batch} | {threads or 'default'} | {order} | {titles:,.0f} "
            f"| {titles / base_titles:.2f} | {postings:,.1f} | {postings / base_postings:.2f} "
            f"| {median_of(results, 'peak_rss_mib'):,.0f} "
            f"| {median_of(results, 'rss_first_quarter_mib'):,.0f} / "
            f"{median_of(results, 'rss_last_quarter_mib'):,.0f} | {loads} |"
        )


def print_accuracy_table(accuracy: dict[str, dict]) -> None:
    print("\n| backend | data | rows | top-1 | top-5 | recall@20 | top-1 vs first (points) |")
    print("|---|---|---|---|---|---|---|")
    first = next(iter(accuracy.values()))
    for backend, by_data in accuracy.items():
        for name, scores in by_data.items():
            delta = 100 * (scores["top1"] - first[name]["top1"])
            print(
                f"| {backend} | {name} | {scores['rows']} | {100 * scores['top1']:.2f}% "
                f"| {100 * scores['top5']:.2f}% | {100 * scores['recall20']:.2f}% "
                f"| {delta:+.2f} |"
            )


def orchestrate(args: argparse.Namespace) -> None:
    configurations = variants(args)
    print(f"{len(configurations)} configurations x {args.repeats} repeats; {args.titles} titles, "
          f"{args.rows} postings; cpus {os.cpu_count()}")  # fmt: skip
    backends = list(dict.fromkeys(configuration[0] for configuration in configurations))
    for backend in backends:
        child(args, "prepare", backend)  # export (once per cache), index load
    measured: dict[tuple, list[dict]] = {configuration: [] for configuration in configurations}
    for repeat in range(args.repeats):
        for configuration in configurations:
            measured[configuration].append(child(args, "speed", *configuration))
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    print()
    print_speed_table(measured)
    if args.accuracy:
        print_accuracy_table({backend: child(args, "accuracy", backend) for backend in backends})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--titles", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default=str(DEFAULT_BATCH_SIZE))
    parser.add_argument("--threads-list", default="0", help="0: the library's default")
    parser.add_argument("--orders", default="sorted", help="sorted,input")
    parser.add_argument("--accuracy", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--worker", choices=("prepare", "speed", "accuracy"))
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--order", choices=("sorted", "input"), default="sorted")
    args = parser.parse_args()
    if args.worker is None:
        orchestrate(args)
        return
    if args.worker == "prepare":
        open_worker_labeler(args)
        result: dict = {"ok": True}
    elif args.worker == "speed":
        result = speed_worker(args)
    else:
        result = accuracy_worker(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
