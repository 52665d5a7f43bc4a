"""The input of a distributed run (`label --engine ray`): which files, and its shards.

The input is a file, a folder (every CSV/TSV/Parquet/JSONL file under it, in path order) or a
glob. The driver reads it once, in that order, with the local engine's reader and checks (the
same column resolution and the same one-line errors for an empty row or a duplicate id, before
any worker starts), and writes it into the run's work folder as numbered Parquet shards of
`shard_rows` rows in one canonical layout (`SHARD_COLUMNS`). A shard is the unit of work, of
commit and of resume; `plan.json`, written last, says the split is complete, so a resumed run
does not read the input again. Row numbers run on across files, from 1.

Why a split pass rather than letting Ray read the input: CSV and JSONL cannot be cut into row
ranges without reading them, and a deterministic shard plan is what makes "skip the finished
shards" safe when a killed job starts again.
"""

from __future__ import annotations

import glob
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from onet_llm.errors import InputError
from onet_llm.postings import (
    DuplicateIds,
    LabelOptions,
    kept_values,
    posting_fields,
    refuse_empty_rows,
    resolve_columns,
)
from onet_llm.tables import EXTENSIONS, iter_table_chunks

SHARD_COLUMNS = ["shard", "row_number", "posting_id", "title", "body", "kept"]
SHARD_SCHEMA = pa.schema(
    [
        ("shard", pa.int64()),
        ("row_number", pa.int64()),
        ("posting_id", pa.string()),
        ("title", pa.string()),
        ("body", pa.string()),
        ("kept", pa.string()),
    ]
)
# Options a worker labels canonical shard rows with: the columns are the shard's own.
CANONICAL_COLUMNS = {"id_column": "posting_id", "title_column": "title", "body_column": "body"}


@dataclass(frozen=True)
class Shard:
    index: int
    first_row: int
    rows: int
    path: str


@dataclass(frozen=True)
class ShardPlan:
    shards: list[Shard]
    total_rows: int
    inputs: list[str]

    @property
    def by_index(self) -> dict[int, Shard]:
        return {shard.index: shard for shard in self.shards}


def input_files(spec: str) -> list[Path]:
    """The files a run labels: `spec` itself, every table file under a folder, or a glob's
    matches (sorted, so the row order, and with it the shards, is the same on every run)."""
    path = Path(spec)
    if path.is_dir():
        files = [p for p in path.rglob("*") if _is_table_file(p)]
        what = f"{spec}: the folder holds no CSV, TSV, Parquet or JSONL file"
    elif any(character in spec for character in "*?["):
        files = [Path(p) for p in glob.glob(spec, recursive=True) if _is_table_file(Path(p))]
        what = f"{spec}: the pattern matches no CSV, TSV, Parquet or JSONL file"
    else:
        if not path.exists():
            raise InputError(f"{spec}: no such file or folder")
        return [path]
    if not files:
        raise InputError(what)
    return sorted(files)


def _is_table_file(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in EXTENSIONS
        and path.suffix.lower() != ".xlsx"
    )


def files_fingerprint(files: list[Path]) -> list[list]:
    """What identifies the input of a run: each file's path, size and modification time."""
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def load_plan(folder: Path) -> ShardPlan | None:
    """The plan of a split that completed, or None."""
    path = folder / "plan.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return ShardPlan([Shard(**s) for s in data["shards"]], data["total_rows"], data["inputs"])


def split_into_shards(
    files: list[Path], folder: Path, options: LabelOptions, shard_rows: int
) -> ShardPlan:
    """Read every file once, check its rows as the local engine does, and write the shards;
    an existing complete plan in `folder` is returned as it is (a resumed run)."""
    if shard_rows < 1:
        raise InputError(f"--shard-rows must be at least 1, got {shard_rows}")
    plan = load_plan(folder)
    if plan is not None:
        return plan
    folder.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(folder, shard_rows)
    duplicates: DuplicateIds | None = None
    for path in files:
        file_options = None
        prefix = f"{path}: " if len(files) > 1 else ""
        for chunk in iter_table_chunks(path, options.chunk_size, options.encoding):
            if file_options is None:
                file_options = resolve_columns(chunk.columns, path, options)
                duplicates = duplicates or DuplicateIds(file_options)
            first_row = writer.next_row
            _check_chunk(chunk, first_row, file_options, duplicates, prefix)
            writer.add(canonical_rows(chunk, first_row, file_options))
        if file_options is None:
            raise InputError(f"{path}: no rows to label")
    plan = writer.close([str(f) for f in files])
    (folder / "plan.json.tmp").write_text(json.dumps({**asdict(plan)}, indent=1))
    (folder / "plan.json.tmp").replace(folder / "plan.json")
    return plan


def _check_chunk(
    chunk: pd.DataFrame,
    first_row: int,
    options: LabelOptions,
    duplicates: DuplicateIds | None,
    prefix: str,
) -> None:
    """The local engine's checks, with the file named when the input has several."""
    try:
        if duplicates is not None and options.id_column:
            duplicates.id_column = options.id_column
            duplicates.check(chunk, first_row)
        refuse_empty_rows(*posting_fields(chunk, first_row, options), first_row, options)
    except InputError as error:
        raise InputError(prefix + str(error)) from None


def canonical_rows(chunk: pd.DataFrame, first_row: int, options: LabelOptions) -> pd.DataFrame:
    """A chunk in the shard layout: row number, id, title, body and the kept columns as JSON."""
    ids, titles, bodies = posting_fields(chunk, first_row, options)
    kept = kept_values(chunk, options)
    return pd.DataFrame(
        {
            "row_number": range(first_row, first_row + len(ids)),
            "posting_id": ids,
            "title": titles,
            "body": bodies,
            "kept": [json.dumps(k) if k else None for k in kept] if kept else [None] * len(ids),
        }
    )


def worker_options(options: LabelOptions) -> LabelOptions:
    """The options a worker labels shard rows with: the shard's own column names, no kept
    columns (they travel as JSON) and bad rows kept (the split pass already refused them)."""
    return replace(options, **CANONICAL_COLUMNS, keep_columns=(), skip_bad_rows=True)


class _ShardWriter:
    """Cuts the stream of canonical rows into Parquet files of `shard_rows` rows."""

    def __init__(self, folder: Path, shard_rows: int) -> None:
        self.folder = folder
        self.shard_rows = shard_rows
        self.buffer: list[pd.DataFrame] = []
        self.buffered = 0
        self.next_row = 1
        self.shards: list[Shard] = []

    def add(self, frame: pd.DataFrame) -> None:
        self.next_row += len(frame)
        while len(frame):
            room = self.shard_rows - self.buffered
            self.buffer.append(frame.iloc[:room])
            self.buffered += min(room, len(frame))
            frame = frame.iloc[room:]
            if self.buffered == self.shard_rows:
                self._flush()

    def _flush(self) -> None:
        if not self.buffered:
            return
        frame = pd.concat(self.buffer, ignore_index=True)
        index = len(self.shards)
        frame.insert(0, "shard", index)
        path = self.folder / f"shard-{index:05d}.parquet"
        temporary = path.with_name(f".{path.name}.partial")
        pq.write_table(pa.Table.from_pandas(frame, SHARD_SCHEMA, preserve_index=False), temporary)
        temporary.replace(path)
        self.shards.append(Shard(index, int(frame["row_number"].iloc[0]), len(frame), str(path)))
        self.buffer, self.buffered = [], 0

    def close(self, inputs: list[str]) -> ShardPlan:
        self._flush()
        return ShardPlan(self.shards, self.next_row - 1, inputs)
