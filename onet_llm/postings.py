"""The input side of labelling: the options, and a postings table opened once.

`open_input` reads the first chunk and checks it (columns, rows, formats) before any model
loads, and keeps the rest of the file unread for `label.label_file`: the file is opened and
parsed once. The row count comes from a Parquet footer or a file that fits in its first chunk;
otherwise the progress bar counts rows without a total.

Column names are matched ignoring case, surrounding space and the difference between spaces,
underscores and hyphens (`--title-column "job title"` finds `Job_Title`), and a missing column
is reported with the columns the file has.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from onet_llm.errors import InputError
from onet_llm.shortlist.text import DEFAULT_TEXT_VARIANT, TextVariant
from onet_llm.tables import iter_table_chunks, parquet_rows, table_format

# O*NET 30.1 has 1,016 occupations (tests/test_taxonomy.py checks the shipped files): a
# shortlist cannot be longer. A constant, so options are checked before the taxonomy loads.
OCCUPATION_COUNT = 1016


def default_output_path(input_path: Path) -> Path:
    return input_path.with_name(f"{input_path.stem}.labels.csv")


# Tried, in order, when the title column is left at its default and the file has no "title".
TITLE_ALIASES = ("title", "job_title", "position_title", "job")


@dataclass(frozen=True)
class LabelOptions:
    top_k: int = 5
    shortlist_size: int = 20
    text_variant: TextVariant = DEFAULT_TEXT_VARIANT
    id_column: str | None = None  # None: "id" if present, else the 1-based row number
    title_column: str = "title"
    body_column: str = "body"
    chunk_size: int = 1000
    skip_bad_rows: bool = False
    encoding: str = "utf-8"
    keep_columns: tuple[str, ...] = ()  # input columns copied to the output
    keep_all_columns: bool = False
    allow_duplicate_ids: bool = False

    def __post_init__(self) -> None:
        """Every number is checked here, before anything is read or loaded."""
        if self.chunk_size < 1:
            raise InputError(f"--chunk-size must be at least 1, got {self.chunk_size}")
        occupations = OCCUPATION_COUNT
        if not 1 <= self.shortlist_size <= occupations:
            raise InputError(
                f"--shortlist-size must be between 1 and the {occupations} occupations, "
                f"got {self.shortlist_size}"
            )
        if not 1 <= self.top_k <= self.shortlist_size:
            raise InputError(
                f"--top-k must be between 1 and --shortlist-size ({self.shortlist_size}), "
                f"got {self.top_k}"
            )


def posting_fields(
    chunk: pd.DataFrame, first_row: int, options: LabelOptions
) -> tuple[list[str], list[str], list[str]]:
    """Ids, titles and bodies of a chunk; the body column is optional."""
    if options.id_column and options.id_column in chunk.columns:
        ids = chunk[options.id_column].astype(str).tolist()
    else:
        ids = [str(first_row + i) for i in range(len(chunk))]
    titles = chunk[options.title_column].astype(str).tolist()
    if options.body_column in chunk.columns:
        bodies = chunk[options.body_column].astype(str).tolist()
    else:
        bodies = [""] * len(chunk)
    return ids, titles, bodies


def empty_row_problem(row_number: int, posting_id: str, title: str, body: str) -> str | None:
    """The one-line error for a row that cannot be labelled (both engines say the same)."""
    if title.strip() or body.strip():
        return None
    return f"row {row_number} (id {posting_id!r}): title and body are both empty"


def refuse_empty_rows(
    ids: list[str], titles: list[str], bodies: list[str], first_row: int, options: LabelOptions
) -> None:
    """Fail on the first row with neither title nor body, unless `--skip-bad-rows` (then the
    row is kept and marked `source=error`)."""
    if options.skip_bad_rows:
        return
    for offset, (posting_id, title, body) in enumerate(zip(ids, titles, bodies, strict=True)):
        problem = empty_row_problem(first_row + offset, posting_id, title, body)
        if problem:
            raise InputError(problem + " (pass --skip-bad-rows to keep going)")


def kept_values(chunk: pd.DataFrame, options: LabelOptions) -> list[dict[str, str]] | None:
    """The input columns to carry to the output, per row (None: keep none)."""
    if not options.keep_columns:
        return None
    frame = chunk[list(options.keep_columns)].astype(str)
    return frame.to_dict(orient="records")


def column_key(name: str) -> str:
    """'  Job Title ' and 'job_title' name the same column."""
    return re.sub(r"[\s_\-]+", "_", str(name).strip().lower())


def find_column(columns: list[str], wanted: str) -> str | None:
    """The file's own spelling of `wanted`: exact first, then insensitive."""
    if wanted in columns:
        return wanted
    matches = [column for column in columns if column_key(column) == column_key(wanted)]
    return matches[0] if matches else None


def resolve_columns(columns: Iterable[str], path: Path, options: LabelOptions) -> LabelOptions:
    """The options with every column named as the file spells it; a missing one fails with
    the columns the file has."""
    columns = [str(column) for column in columns]
    found = ", ".join(repr(column) for column in columns) or "none"

    def require(wanted: str, flag: str) -> str:
        column = find_column(columns, wanted)
        if column is None:
            raise InputError(
                f"{path}: missing column {wanted!r} ({flag}); the columns are: {found}"
            )
        return column

    title = find_column(columns, options.title_column)
    if title is None and options.title_column == "title":
        title = next((c for a in TITLE_ALIASES if (c := find_column(columns, a))), None)
    if title is None:
        require(options.title_column, "--title-column")
    if options.id_column:
        id_column = require(options.id_column, "--id-column")
    else:
        id_column = find_column(columns, "id")
    body = find_column(columns, options.body_column) or options.body_column
    if options.keep_all_columns:
        keep = tuple(columns)
    else:
        keep = tuple(require(name, "--keep-columns") for name in options.keep_columns)
    keep = tuple(c for c in dict.fromkeys(keep) if c not in (title, id_column))  # output anyway
    return replace(
        options, title_column=title, id_column=id_column, body_column=body, keep_columns=keep
    )


class DuplicateIds:
    """Remembers every id seen in a run, so the second use of one fails naming both rows."""

    def __init__(self, options: LabelOptions) -> None:
        self.active = bool(options.id_column) and not options.allow_duplicate_ids
        self.id_column = options.id_column
        self.first_row: dict[str, int] = {}

    def check(self, chunk: pd.DataFrame, first_row: int) -> None:
        if not self.active:
            return
        for offset, posting_id in enumerate(chunk[self.id_column].astype(str)):
            row = first_row + offset
            earlier = self.first_row.setdefault(posting_id, row)
            if earlier != row:
                raise InputError(
                    f"row {row}: id {posting_id!r} is already used by row {earlier} "
                    f"(column {self.id_column!r}; pass --allow-duplicate-ids to label it anyway)"
                )


@dataclass
class LabelInput:
    """An input file opened once: its checked first chunk, the rest still unread, the options
    with the id column resolved, and the row count when known without a second read."""

    path: Path
    options: LabelOptions
    first_chunk: pd.DataFrame
    rest: Iterator[pd.DataFrame]
    total_rows: int | None
    warnings: list[str] = field(default_factory=list)

    def chunks(self) -> Iterator[pd.DataFrame]:
        """The whole table in `options.chunk_size` chunks (the first one may be shorter)."""
        yield self.first_chunk
        yield from self.rest


def check_output(input_path: Path, output_path: Path) -> None:
    """The output can be written: a known format, a folder that exists and is writable, and not
    the input itself (also through a symlink), which the atomic rename would overwrite."""
    table_format(output_path)
    if output_path.resolve() == input_path.resolve():
        raise InputError(f"{output_path}: the output is the input file; choose another -o")
    folder = output_path.resolve().parent
    if not folder.is_dir():
        raise InputError(f"{output_path}: the output folder {folder} is missing; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{output_path}: the output folder {folder} is not writable")


def open_input(input_path: Path, output_path: Path | None, options: LabelOptions) -> LabelInput:
    """Fail fast, before any model loads, on a file that cannot be labelled or an output that
    cannot be written; column names are resolved to the file's own spelling ("id" is the id
    column when present and not given)."""
    table_format(input_path)
    check_output(input_path, output_path or default_output_path(input_path))
    chunks = iter_table_chunks(input_path, options.chunk_size, options.encoding)
    first_chunk = next(chunks)
    options = resolve_columns(first_chunk.columns, input_path, options)
    if first_chunk.empty:
        raise InputError(f"{input_path}: no rows to label")
    total = parquet_rows(input_path)
    if total is None and len(first_chunk) < options.chunk_size:
        total = len(first_chunk)  # the first chunk is the whole file
    opened = LabelInput(input_path, options, first_chunk, chunks, total)
    opened.warnings.extend(numeric_title_warnings(input_path, options.title_column))
    return opened


def numeric_title_warnings(path: Path, title_column: str) -> list[str]:
    """A Parquet title column of numbers is labelled as text ("1234"); say so, with a count,
    since it usually means the wrong column."""
    if table_format(path) != "parquet":
        return []
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = pq.read_table(path, columns=[title_column]).column(0)
    if not (pa_is_number(column.type)):
        return []
    count = len(column) - column.null_count
    return [
        f"{path}: column {title_column!r} holds numbers, not text: {count} titles are "
        f"labelled as their digits (e.g. {pc.min(column).as_py()!r}); is it the right column?"
    ]


def pa_is_number(data_type) -> bool:
    import pyarrow.types as pat

    return pat.is_integer(data_type) or pat.is_floating(data_type) or pat.is_decimal(data_type)


def spool_stdin(stream, folder: Path, input_format: str | None = None) -> Path:
    """Standard input copied to a file (`label -`): the reader needs a file it can chunk and
    the run needs a path for its identity. The format is `input_format`, or JSONL when the first
    character is `{`, else CSV."""
    import time

    data = stream.read()
    if not data.strip():
        raise InputError("-: standard input is empty")
    if input_format is None:
        input_format = "jsonl" if data.lstrip()[:1] in (b"{", "{") else "csv"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"stdin-{time.strftime('%Y%m%dT%H%M%S')}-{id(data) % 10_000}.{input_format}"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path
