"""The options of `onet-llm label`, one annotated type each (cli.label stays about running)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onet_llm.cli.choices import CandidateOrder, Engine, LlmWhen, StdinFormat

InputArgument = Annotated[
    Path,
    typer.Argument(
        metavar="INPUT",
        help="Postings: .csv, .tsv, .parquet, .jsonl or .xlsx; '-' reads CSV or JSONL from stdin; "
        "with --engine ray also a folder, a quoted glob or a URI (s3://bucket/ads/, file:///...).",
    ),
]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        "-o",
        "--output",
        help="Default: INPUT-stem.labels.csv beside the input; '-' writes to stdout "
        "(the default for stdin input).",
    ),
]
TopKOption = Annotated[int, typer.Option("--top-k", help="Labels per posting.")]
IdColumnOption = Annotated[
    str | None, typer.Option("--id-column", help="Default: 'id' if present, else the row number.")
]
TitleColumnOption = Annotated[
    str,
    typer.Option(
        "--title-column",
        help="Matched ignoring case and spaces; the default also finds 'job title'.",
    ),
]
BodyColumnOption = Annotated[str, typer.Option("--body-column", help="Optional column.")]
ChunkSizeOption = Annotated[
    int, typer.Option("--chunk-size", help="Rows read, labelled and committed at a time.")
]
SkipBadRowsOption = Annotated[
    bool, typer.Option("--skip-bad-rows", help="Keep going past empty rows (marked source=error).")
]
LlmOption = Annotated[
    bool, typer.Option("--llm", help="Rerank each shortlist with an LLM (stage 2).")
]
MaxCostOption = Annotated[
    float | None, typer.Option("--max-cost-usd", help="Stop cleanly before LLM spend passes this.")
]
LlmWhenOption = Annotated[
    LlmWhen | None,
    typer.Option(
        "--llm-when", help="always, or uncertain: only rows whose top-1 is not clearly ahead."
    ),
]
CandidateOrderOption = Annotated[
    CandidateOrder | None,
    typer.Option("--candidate-order", help="The order the LLM sees the shortlist in."),
]
EncodingOption = Annotated[
    str,
    typer.Option("--encoding", help="Text encoding of a CSV/TSV/JSONL input (e.g. latin-1)."),
]
KeepColumnsOption = Annotated[
    str | None,
    typer.Option("--keep-columns", help="Input columns copied to the output, comma-separated."),
]
KeepAllColumnsOption = Annotated[
    bool, typer.Option("--keep-all-columns", help="Copy every input column to the output.")
]
AllowDuplicateIdsOption = Annotated[
    bool,
    typer.Option("--allow-duplicate-ids", help="Label rows that share an id instead of failing."),
]
InputFormatOption = Annotated[
    StdinFormat | None,
    typer.Option("--input-format", help="Format of stdin (default: JSONL if it starts with '{')."),
]
LlmModeOption = Annotated[
    str | None,
    typer.Option(
        "--llm-mode",
        help="sync (default) | batch: send the LLM requests through the Batch API (half the "
        "price, answered within 24 h; the command waits, and resumes the same batch if killed).",
    ),
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="With --llm: count the rows, cache hits and tokens the LLM would get and price "
        "them in sync and batch mode; calls no LLM and writes no output.",
    ),
]
StrictOption = Annotated[
    bool,
    typer.Option(
        "--strict", help="Exit 1 when any row fell back to the embedding ranking (output kept)."
    ),
]
EngineOption = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="local (default) | ray: the embedding stage on Ray Data, for large inputs (a file, "
        "a folder or a quoted glob); the output is a folder of Parquet parts unless -o names a "
        "file. Needs onet-llm[ray].",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="With --engine ray: an existing cluster (e.g. ray://head:10001, or 'auto'); "
        "default: a local Ray runtime on this machine's cores.",
    ),
]
RayActorsOption = Annotated[
    int | None,
    typer.Option("--ray-actors", help="With --engine ray: encoder actors (default: one per CPU)."),
]
ShardRowsOption = Annotated[
    int,
    typer.Option(
        "--shard-rows", help="With --engine ray: rows per shard (the unit of commit and resume)."
    ),
]
WorkDirOption = Annotated[
    Path | None,
    typer.Option(
        "--work-dir",
        help="With --engine ray: where the input shards go (default: HOME/ray); on a cluster, "
        "a folder every node can read.",
    ),
]
