"""The input side of labelling: the options, and a postings table opened once.

`open_input` reads the first chunk and checks it (columns, rows, formats) before any model
loads, and keeps the rest of the file unread for `label.label_file`: the file is opened and
parsed once. The row count comes from a Parquet footer or a file that fits in its first chunk;
otherwise the progress bar counts rows without a total.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
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


def check_columns(columns: Iterable[str], path: Path, options: LabelOptions) -> None:
    columns = list(columns)
    required = [options.title_column]
    if options.id_column and options.id_column != "id":
        required.append(options.id_column)
    missing = [name for name in required if name not in columns]
    if missing:
        raise InputError(
            f"{path}: missing column {missing[0]!r} (columns are: {', '.join(columns) or 'none'})"
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
    cannot be written; the id column is resolved ("id" when present and not given)."""
    table_format(input_path)
    check_output(input_path, output_path or default_output_path(input_path))
    chunks = iter_table_chunks(input_path, options.chunk_size)
    first_chunk = next(chunks)
    check_columns(first_chunk.columns, input_path, options)
    if first_chunk.empty:
        raise InputError(f"{input_path}: no rows to label")
    id_column = options.id_column or ("id" if "id" in first_chunk.columns else None)
    total = parquet_rows(input_path)
    if total is None and len(first_chunk) < options.chunk_size:
        total = len(first_chunk)  # the first chunk is the whole file
    return LabelInput(input_path, replace(options, id_column=id_column), first_chunk, chunks, total)
