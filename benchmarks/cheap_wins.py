"""The two cheap wins `throughput.py` has no setting for: the fusion search's query chunk and
tokenizer parallelism, each measured on the default backend (fp32 ONNX).

    python benchmarks/cheap_wins.py [--titles 3000] [--rows 1000] [--repeats 5]

1. Search: `FusionIndex.search` (the default index, 57.5k title vectors) on the vectors of
   `--titles` distinct real titles, with `fusion.QUERY_CHUNK` (queries per matrix product)
   at 32 to 2,048, interleaved, median of `--repeats`; the encoder is not timed.
2. Tokenizer: `Encoder.encode` (tokenize + onnxruntime + pooling) of `--titles` titles and
   `--rows` postings in child processes with `TOKENIZERS_PARALLELISM` false (the default the
   package sets) and true, interleaved, medians of `--repeats`; also the tokenizer alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHUNKS = (32, 128, 256, 512, 2048)


def texts(titles: int, rows: int) -> tuple[list[str], list[str]]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from throughput import real_titles_and_bodies

    from onet_llm.shortlist.text import posting_text

    frame = real_titles_and_bodies()
    pairs = zip(frame.title[:rows], frame.body[:rows], strict=True)
    postings = [posting_text(title, body) for title, body in pairs]
    return frame.title[:titles].tolist(), postings


def search_table(args: argparse.Namespace) -> None:
    from onet_llm.label import open_labeler
    from onet_llm.settings import Settings
    from onet_llm.shortlist import fusion

    settings = Settings.load()
    labeler, _ = open_labeler(
        "default", settings.index_cache_dir, encoder_options=settings.encoder_options()
    )
    titles, _ = texts(args.titles, 0)
    queries = labeler.encoder.encode(titles)
    seconds: dict[int, list[float]] = {chunk: [] for chunk in CHUNKS}
    reference = None
    for _ in range(args.repeats):
        for chunk in CHUNKS:
            fusion.QUERY_CHUNK = chunk
            started = time.perf_counter()
            positions, _ = labeler.index.search(queries, 20)
            seconds[chunk].append(time.perf_counter() - started)
            reference = positions if reference is None else reference
            assert (positions == reference).all()  # the chunk changes speed, never results
    backend = labeler.encoder.backend
    print(f"\nFusion search of {len(titles):,} title vectors, shortlist of 20, "
          f"medians of {args.repeats} (encoder {backend}, not timed)\n")  # fmt: skip
    print("| query chunk | queries/s | x 256 (the default) |\n|---:|---:|---:|")
    base = statistics.median(seconds[256])
    for chunk in CHUNKS:
        median = statistics.median(seconds[chunk])
        print(f"| {chunk:,} | {len(titles) / median:,.0f} | {base / median:.2f} |")


def tokenizer_child(args: argparse.Namespace) -> None:
    from onet_llm.settings import Settings
    from onet_llm.shortlist.encoder import Encoder

    settings = Settings.load()
    encoder = Encoder(
        "default", export_cache_dir=settings.index_cache_dir, **settings.encoder_options()
    )
    titles, postings = texts(args.titles, args.rows)
    encoder.encode(titles[:64])  # load and warm up
    result = {}
    for name, batch in (("titles", titles), ("postings", postings)):
        started = time.perf_counter()
        encoder.encode(batch)
        result[f"{name}_per_s"] = len(batch) / (time.perf_counter() - started)
        tokenizer = encoder.encoding_model.tokenizer
        started = time.perf_counter()
        for begin in range(0, len(batch), encoder.batch_size):
            tokenizer.encode_batch(batch[begin : begin + encoder.batch_size])
        result[f"{name}_tokenize_s"] = time.perf_counter() - started
    print(json.dumps(result))


def tokenizer_table(args: argparse.Namespace) -> None:
    measured: dict[str, list[dict]] = {"false": [], "true": []}
    for _ in range(args.repeats):
        for setting in measured:
            env = {**os.environ, "TOKENIZERS_PARALLELISM": setting}
            command = [sys.executable, __file__, "--child", "--titles", str(args.titles),
                       "--rows", str(args.rows)]  # fmt: skip
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            measured[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\nEncode (tokenize + onnxruntime + pool) of {args.titles:,} titles and {args.rows:,} "
          f"postings, one child process each, medians of {args.repeats}\n")  # fmt: skip
    print("| TOKENIZERS_PARALLELISM | titles/s | tokenizing titles | postings/s | "
          "tokenizing postings |\n|---|---:|---:|---:|---:|")  # fmt: skip
    for setting, results in measured.items():
        median = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print(f"| {setting} | {median['titles_per_s']:,.0f} "
              f"| {median['titles_tokenize_s']:.3f} s | {median['postings_per_s']:,.1f} "
              f"| {median['postings_tokenize_s']:.3f} s |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--titles", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tokenizer_child(args)
        return
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    search_table(args)
    tokenizer_table(args)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
