"""Read postings and write labels as CSV, Parquet or JSONL, chosen by file extension, in chunks.

Every value is read as a string, so ids come back exactly as written ("007" stays "007").
Outputs go to a hidden temporary file that is renamed into place only when complete: a failed
or killed run never leaves a half-written output behind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from onet_llm.errors import InputError

TableFormat = Literal["csv", "parquet", "jsonl"]
EXTENSIONS: dict[str, TableFormat] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def table_format(path: Path) -> TableFormat:
    try:
        return EXTENSIONS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(EXTENSIONS))
        raise InputError(
            f"{path}: unknown extension {path.suffix!r} (use one of {known})"
        ) from None


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")


def iter_table_chunks(path: Path, chunk_size: int = 1000) -> Iterator[pd.DataFrame]:
    """Yield the table in chunks of string columns; errors name the file and the problem."""
    file_format = table_format(path)
    _check_readable(path)
    try:
        if file_format == "csv":
            yield from _iter_csv(path, chunk_size)
        elif file_format == "parquet":
            yield from _iter_parquet(path, chunk_size)
        else:
            yield from _iter_jsonl(path, chunk_size)
    except (pd.errors.ParserError, pa.ArrowInvalid, UnicodeDecodeError) as error:
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise InputError(f"{path}: cannot parse as {file_format}: {first_line}") from None


def _iter_csv(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    try:
        reader = pd.read_csv(
            path, dtype=str, keep_default_na=False, chunksize=chunk_size, encoding="utf-8"
        )
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    with reader:
        yield from reader


def _iter_parquet(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    parquet = pq.ParquetFile(path)
    if parquet.metadata.num_rows == 0:
        yield parquet.schema_arrow.empty_table().to_pandas()
        return
    for batch in parquet.iter_batches(batch_size=chunk_size):
        frame = batch.to_pandas()
        yield frame.apply(lambda column: column.map(_as_text)).astype(object)


def _iter_jsonl(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    records: list[dict] = []
    columns: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(
                    f"{path}: line {line_number} is not valid JSON ({error.msg})"
                ) from None
            if not isinstance(record, dict):
                raise InputError(f"{path}: line {line_number} is not a JSON object")
            for key in record:
                if key not in columns:
                    columns.append(key)
            records.append({key: _as_text(value) for key, value in record.items()})
            if len(records) == chunk_size:
                yield pd.DataFrame(records, columns=columns).fillna("")
                records = []
    if records or not columns:
        yield pd.DataFrame(records, columns=columns).fillna("")


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(value: str) -> str:
    """`value` with a leading `'` when it starts like a spreadsheet formula (OWASP's rule for
    CSV injection: `=`, `+`, `-`, `@`, tab, carriage return), so a posting titled
    `=HYPERLINK(...)` opens in Excel or LibreOffice as text, not as a live formula. Only CSV
    output needs this; Parquet and JSONL keep the raw value."""
    return f"'{value}" if value.startswith(FORMULA_LEADS) else value


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` with every text cell passed through `neutralise_formula`."""
    frame = frame.copy()
    for column in frame.columns:
        if pd.api.types.is_object_dtype(frame[column]) or pd.api.types.is_string_dtype(
            frame[column]
        ):
            frame[column] = frame[column].map(
                lambda value: neutralise_formula(value) if isinstance(value, str) else value
            )
    return frame


def file_sha256(path: Path) -> str:
    """Content hash of a file, read in blocks: provenance for data sets and model weights."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parquet_rows(path: Path) -> int | None:
    """Rows in a Parquet file, from its footer (no data is read); None for other formats,
    whose row count is not known until they have been read."""
    if table_format(path) == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return None


class TableWriter:
    """Append chunks of a fixed set of columns to CSV, Parquet or JSONL, atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.format = table_format(path)
        self.temporary = path.with_name(f".{path.name}.partial")
        self._parquet: pq.ParquetWriter | None = None
        self._started = False

    def write(self, frame: pd.DataFrame | list[dict]) -> None:
        if self.format == "jsonl":
            with self.temporary.open("a" if self._started else "w", encoding="utf-8") as handle:
                for record in frame:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif self.format == "csv":
            frame.to_csv(
                self.temporary,
                mode="a" if self._started else "w",
                header=not self._started,
                index=False,
            )
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.temporary, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        self._started = True

    def commit(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if not self._started:
            self.temporary.write_text("")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.temporary.replace(self.path)

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self.temporary.unlink(missing_ok=True)


def output_records(
    rows: pd.DataFrame, labels: list[list[dict]], top_k: int, file_format: str
) -> pd.DataFrame | list[dict]:
    """Store rows (and their labels, parsed) -> the output layout: wide columns for
    CSV/Parquet, nested labels for JSONL."""
    if file_format == "jsonl":
        return [
            {"id": posting_id, "labels": row_labels, "source": source, "error": error or None}
            for posting_id, row_labels, source, error in zip(
                rows["posting_id"], labels, rows["source"], rows["error"], strict=True
            )
        ]
    wide: dict[str, list] = {"id": rows["posting_id"].tolist()}
    for field, name in (
        ("onet_code", "onet_code"),
        ("onet_title", "onet_title"),
        ("score", "score"),
    ):
        for k in range(top_k):
            wide[f"{name}_{k + 1}"] = [
                row_labels[k][field] if k < len(row_labels) else None for row_labels in labels
            ]
    extra_fields = sorted(
        {key for row_labels in labels for label in row_labels for key in label}
        - {"onet_code", "onet_title", "score"}
    )
    for field in extra_fields:
        for k in range(top_k):
            wide[f"{field}_{k + 1}"] = [
                row_labels[k].get(field) if k < len(row_labels) else None for row_labels in labels
            ]
    wide["source"] = rows["source"].tolist()
    wide["error"] = [error if isinstance(error, str) else "" for error in rows["error"]]
    frame = pd.DataFrame(wide)
    for k in range(top_k):
        frame[f"score_{k + 1}"] = frame[f"score_{k + 1}"].astype("float64")
    return frame
