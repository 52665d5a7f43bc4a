"""Read postings and write labels as CSV, TSV, Parquet, JSONL or Excel (.xlsx), chosen by file
extension, in chunks.

Every value is read as a string, so ids come back exactly as written ("007" stays "007").
Outputs go to a hidden temporary file that is renamed into place only when complete: a failed
or killed run never leaves a half-written output behind.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from onet_llm.errors import InputError

TableFormat = Literal["csv", "tsv", "parquet", "jsonl", "xlsx"]
EXTENSIONS: dict[str, TableFormat] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".xlsx": "xlsx",
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


def iter_table_chunks(
    path: Path, chunk_size: int = 1000, encoding: str = "utf-8"
) -> Iterator[pd.DataFrame]:
    """Yield the table in chunks of string columns; errors name the file and the problem.
    `encoding` applies to the text formats (CSV, TSV, JSONL)."""
    file_format = table_format(path)
    _check_readable(path)
    _check_encoding_name(encoding)
    try:
        if file_format in ("csv", "tsv"):
            yield from _iter_csv(path, chunk_size, encoding, "\t" if file_format == "tsv" else ",")
        elif file_format == "parquet":
            yield from _iter_parquet(path, chunk_size)
        elif file_format == "xlsx":
            yield from _iter_xlsx(path, chunk_size)
        else:
            yield from _iter_jsonl(path, chunk_size, encoding)
    except UnicodeDecodeError as error:
        raise InputError(decode_error_message(path, encoding, error)) from None
    except (pd.errors.ParserError, pa.ArrowInvalid) as error:
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise InputError(f"{path}: cannot parse as {file_format}: {first_line}") from None


def _check_encoding_name(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(
            f"--encoding: unknown encoding {encoding!r} (try utf-8, latin-1, cp1252)"
        ) from None


def decode_error_message(path: Path, encoding: str, error: UnicodeDecodeError) -> str:
    """Where the first undecodable byte is (line and byte offset, found by a second pass over
    the raw bytes, since the parser only knows its position inside a buffer), and what to do."""
    offset = 0
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as line_error:
                byte = raw[line_error.start : line_error.start + 1].hex()
                where = f"line {line_number} (byte offset {offset + line_error.start}, 0x{byte})"
                break
            offset += len(raw)
        else:
            where = f"byte offset {error.start}"
    hint = "latin-1 or cp1252" if encoding.replace("-", "").lower() == "utf8" else "utf-8"
    return (
        f"{path}: {where} is not valid {encoding}; pass --encoding with the file's encoding "
        f"(often {hint})"
    )


def _iter_csv(path: Path, chunk_size: int, encoding: str, separator: str) -> Iterator[pd.DataFrame]:
    try:
        reader = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            chunksize=chunk_size,
            encoding=encoding,
            sep=separator,
        )
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    with reader:
        yield from reader


def _iter_xlsx(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    """The first sheet; Excel files fit in memory (a sheet holds at most ~1M rows)."""
    import zipfile

    from openpyxl.utils.exceptions import InvalidFileException

    try:
        frame = pd.read_excel(path, dtype=str, keep_default_na=False, engine="openpyxl")
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, InvalidFileException) as error:
        raise InputError(f"{path}: cannot read as an Excel workbook ({error})") from None
    frame = frame.fillna("").astype(str)
    frame.columns = [str(column) for column in frame.columns]
    if frame.empty:
        yield frame
        return
    for start in range(0, len(frame), chunk_size):
        yield frame.iloc[start : start + chunk_size].reset_index(drop=True)


def _iter_parquet(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    parquet = pq.ParquetFile(path)
    if parquet.metadata.num_rows == 0:
        yield parquet.schema_arrow.empty_table().to_pandas()
        return
    for batch in parquet.iter_batches(batch_size=chunk_size):
        frame = batch.to_pandas()
        yield frame.apply(lambda column: column.map(_as_text)).astype(object)


def _iter_jsonl(path: Path, chunk_size: int, encoding: str) -> Iterator[pd.DataFrame]:
    records: list[dict] = []
    columns: list[str] = []
    with path.open(encoding=encoding) as handle:
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


# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(value: str) -> str:
    """A text cell that a spreadsheet would run as a formula gets a leading apostrophe (the
    OWASP rule for CSV injection); any other value is returned as it is."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """The text columns of a frame bound for CSV, neutralised cell by cell. Parquet and JSONL
    keep the raw values: they are read by programs, not spreadsheets."""
    text_columns = [
        name
        for name in frame.columns
        if pd.api.types.is_object_dtype(frame[name]) or pd.api.types.is_string_dtype(frame[name])
    ]
    if not text_columns:
        return frame
    return frame.assign(**{name: frame[name].map(neutralise_formula) for name in text_columns})


class TableWriter:
    """Append chunks of a fixed set of columns to CSV, TSV, Parquet, JSONL or Excel, atomically.
    An Excel workbook is written at `commit` (openpyxl cannot append to a sheet on disk). CSV,
    TSV and Excel cells that a spreadsheet would run as formulas are neutralised (see
    `neutralise_formula`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.format = table_format(path)
        self.temporary = path.with_name(f".{path.name}.partial")
        self._parquet: pq.ParquetWriter | None = None
        self._frames: list[pd.DataFrame] = []
        self._started = False

    def write(self, frame: pd.DataFrame | list[dict]) -> None:
        if self.format == "jsonl":
            with self.temporary.open("a" if self._started else "w", encoding="utf-8") as handle:
                for record in frame:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif self.format in ("csv", "tsv"):
            neutralise_formulas(frame).to_csv(
                self.temporary,
                mode="a" if self._started else "w",
                header=not self._started,
                index=False,
                sep="\t" if self.format == "tsv" else ",",
            )
        elif self.format == "xlsx":
            self._frames.append(neutralise_formulas(frame))
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.temporary, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        self._started = True

    def commit(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self.format == "xlsx" and self._frames:
            pd.concat(self._frames, ignore_index=True).to_excel(
                self.temporary, index=False, engine="openpyxl"
            )
        elif not self._started:
            self.temporary.write_text("")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.temporary.replace(self.path)

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self.temporary.unlink(missing_ok=True)
