"""The input of a distributed run (`label --engine ray`): which files, and its shards.

The input is a file, a folder (every CSV/TSV/Parquet/JSONL file under it, in path order) or a
glob, on the local disk or on any filesystem pyarrow opens from a URI (`s3://`, `gs://`,
`hdfs://`, `file://`; see `remote_files`). The driver reads it once, in that order, with the
local engine's reader and checks (the same column resolution and the same one-line errors for
an empty row or a duplicate id, before any worker starts), and writes it into the run's local
work folder as numbered Parquet shards of `shard_rows` rows in one canonical layout
(`SHARD_COLUMNS`): workers read the shards, never the remote filesystem. A shard is the unit of
work, of commit and of resume; `plan.json`, written last, says the split is complete, so a
resumed run does not read the input again. Row numbers run on across files, from 1.

Why a split pass rather than letting Ray read the input: CSV and JSONL cannot be cut into row
ranges without reading them, and a deterministic shard plan is what makes "skip the finished
shards" safe when a killed job starts again.
"""

from __future__ import annotations

import fcntl
import fnmatch
import glob
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
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
from onet_llm.tables import EXTENSIONS, iter_table_chunks, table_format

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
# `scheme://...`, and the same URI after a `Path` has folded its `//` (typer hands the command
# line's INPUT over as a Path: `s3://bucket/key` arrives as `s3:/bucket/key`).
URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):(?P<slashes>//?)(?P<rest>.*)$")
# The schemes pyarrow's `FileSystem.from_uri` opens; only these are recognised in folded form.
URI_SCHEMES = {"file", "local", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"}
WILDCARDS = "*?["
# Environment variables whose values never appear in a message.
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCOUNT_KEY")


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
    # `files_fingerprint` of the inputs when they were split: a plan whose local inputs no
    # longer match belongs to a job that can never resume (`stale_work_folders`).
    input_fingerprint: list[list] = field(default_factory=list)

    @property
    def by_index(self) -> dict[int, Shard]:
        return {shard.index: shard for shard in self.shards}


@dataclass(frozen=True)
class RemoteFile:
    """A table file on a pyarrow filesystem. `uri` names it in messages, in plan.json and in
    the run's identity, without credentials or query; `filesystem` and `path` read it."""

    uri: str
    filesystem: pafs.FileSystem
    path: str
    size: int | None
    mtime_ns: int | None

    def __str__(self) -> str:
        return self.uri

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix


InputFile = Path | RemoteFile


def input_files(spec: str) -> list[InputFile]:
    """The files a run labels: `spec` itself, every table file under a folder, or a glob's
    matches (sorted, so the row order, and with it the shards, is the same on every run).
    A URI (`s3://bucket/ads/`) is listed through pyarrow: see `remote_files`."""
    uri = remote_uri(spec)
    if uri is not None:
        return remote_files(uri)
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
    return path.is_file() and _is_table_name(path.name)


def _is_table_name(name: str) -> bool:
    suffix = PurePosixPath(name).suffix.lower()
    return not name.startswith(".") and suffix in EXTENSIONS and suffix != ".xlsx"


def remote_uri(spec: str) -> str | None:
    """`spec` as a URI when it names a filesystem rather than a local path, else None. The
    folded form (`s3:/bucket/key`, what a `Path` makes of `s3://bucket/key`, and `file:/abs`
    of `file:///abs`) is unfolded."""
    match = URI.match(spec)
    if match is None:
        return None
    scheme, slashes = match["scheme"], match["slashes"]
    if slashes == "//":
        return spec
    if scheme.lower() not in URI_SCHEMES:
        return None
    if scheme.lower() in ("file", "local"):  # no host: `file:///abs/path`
        return f"{scheme}:///{match['rest']}"
    return f"{scheme}://{match['rest']}"


def shown_uri(uri: str) -> str:
    """The URI as messages and records show it: no credentials (`user:secret@`), no query
    (`?endpoint_override=...`), percent-escapes decoded."""
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{unquote(parts.path)}"


def remote_files(uri: str) -> list[RemoteFile]:
    """The table files a URI names, through `pyarrow.fs.FileSystem.from_uri`: one file, every
    table file under a folder (a prefix, listed recursively, like a local folder) or the
    matches of a glob in the URI's last part (`s3://bucket/ads/2026-*.csv`), sorted by path.

    Where the filesystem is and who may read it comes from the URI's query or from the
    environment, as pyarrow reads them. A custom S3 endpoint (MinIO, Ceph, a local test
    server): `s3://bucket/ads/?endpoint_override=127.0.0.1:9000&scheme=http`, or
    `AWS_ENDPOINT_URL=http://127.0.0.1:9000` in the environment; `&region=...` or
    `AWS_DEFAULT_REGION` saves the lookup of the bucket's region on AWS itself. Credentials:
    `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (or `~/.aws/credentials`, or an instance
    role), never in the URI: the run's store records the input as it was given."""
    parts = urlsplit(uri)
    shown = shown_uri(uri)
    if not any(character in parts.path for character in WILDCARDS):
        with remote_errors(uri):
            filesystem, base = pafs.FileSystem.from_uri(uri)
            info = filesystem.get_file_info(base)
            if info.type == pafs.FileType.File:
                return [_remote_file(filesystem, info, base, shown)]
            if info.type != pafs.FileType.Directory:
                raise InputError(f"{shown}: no such file or folder")
            listing = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
        files = [_remote_file(filesystem, i, base, shown) for i in _table_files(listing)]
        what = f"{shown}: the folder holds no CSV, TSV, Parquet or JSONL file"
    else:
        folder, _, pattern = parts.path.rpartition("/")
        if any(character in folder for character in WILDCARDS) or not pattern:
            raise InputError(
                f"{shown}: a remote glob has its wildcards in the last part only "
                "(s3://bucket/ads/2026-*.csv)"
            )
        folder_uri = urlunsplit(parts._replace(path=folder or "/"))
        folder_shown = shown_uri(folder_uri)
        with remote_errors(uri):
            filesystem, base = pafs.FileSystem.from_uri(folder_uri)
            selector = pafs.FileSelector(base, recursive=False, allow_not_found=True)
            listing = filesystem.get_file_info(selector)
        matches = [i for i in listing if fnmatch.fnmatchcase(i.base_name, unquote(pattern))]
        files = [_remote_file(filesystem, i, base, folder_shown) for i in _table_files(matches)]
        what = f"{shown}: the pattern matches no CSV, TSV, Parquet or JSONL file"
    if not files:
        raise InputError(what)
    return sorted(files, key=lambda file: PurePosixPath(file.path).parts)


def _table_files(listing: list[pafs.FileInfo]) -> list[pafs.FileInfo]:
    return [i for i in listing if i.type == pafs.FileType.File and _is_table_name(i.base_name)]


def _remote_file(
    filesystem: pafs.FileSystem, info: pafs.FileInfo, base: str, base_shown: str
) -> RemoteFile:
    """A listed file, named by the URI it was listed under plus its path below that."""
    below = info.path[len(base) :].strip("/") if info.path.startswith(base) else info.path
    uri = f"{base_shown.rstrip('/')}/{below}" if below else base_shown
    return RemoteFile(uri, filesystem, info.path, info.size, info.mtime_ns)


@contextmanager
def remote_errors(uri: str) -> Iterator[None]:
    """pyarrow's errors (no bucket, no credentials, no connection, an unknown scheme) as one
    line that names the input, and never a secret: the URI's credentials and query and the
    secret environment variables are cut out of pyarrow's message."""
    try:
        yield
    except (OSError, pa.ArrowException) as error:
        lines = str(error).strip().splitlines()
        reason = redact(lines[0] if lines else type(error).__name__, uri)
        raise InputError(f"{shown_uri(uri)}: cannot read ({reason})") from None


def redact(message: str, uri: str) -> str:
    """`message` with the URI shown without its credentials, and every secret replaced."""
    parts: SplitResult = urlsplit(uri)
    message = message.replace(uri, shown_uri(uri))
    secrets = [parts.password, parts.username, parts.query]
    secrets += [os.environ.get(name) for name in SECRET_VARIABLES]
    for secret in (secret for secret in secrets if secret and len(secret) >= 4):
        message = message.replace(secret, "***").replace(unquote(secret), "***")
    return message


def files_fingerprint(files: list[InputFile]) -> list[list]:
    """What identifies the input of a run: each file's path, size and modification time (for
    a remote file, its URI and what its filesystem lists)."""
    return [_file_fingerprint(file) for file in files]


def _file_fingerprint(file: InputFile) -> list:
    if isinstance(file, RemoteFile):
        return [file.uri, file.size, file.mtime_ns]
    return [str(file.resolve()), file.stat().st_size, file.stat().st_mtime_ns]


@contextmanager
def readable_copy(file: InputFile, folder: Path) -> Iterator[Path]:
    """A local path the table reader opens: a local file as it is; a remote one copied once,
    as it is stored, into `folder` and removed afterwards. Errors that name the copy name the
    remote file instead, so both give the same one-line messages."""
    if isinstance(file, Path):
        yield file
        return
    copy = folder / f".input{file.suffix}"
    try:
        try:
            table_format(copy)  # an unknown extension is refused before a byte is copied
            with remote_errors(file.uri):
                source = file.filesystem.open_input_stream(file.path, compression=None)
                with source, copy.open("wb") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
            yield copy
        except InputError as error:
            raise InputError(str(error).replace(str(copy), file.uri)) from None
    finally:
        copy.unlink(missing_ok=True)


def load_plan(folder: Path) -> ShardPlan | None:
    """The plan of a split that completed, or None."""
    path = folder / "plan.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    shards = [Shard(**s) for s in data["shards"]]
    return ShardPlan(shards, data["total_rows"], data["inputs"], data.get("input_fingerprint", []))


def fingerprint_now(recorded: list[list]) -> list[list] | None:
    """`files_fingerprint` of the local files a recorded fingerprint names (by their resolved
    paths, so the folder a command runs from does not matter), as they are now; None when one
    is gone."""
    try:
        return files_fingerprint([Path(entry[0]) for entry in recorded])
    except OSError:
        return None


JOB_LOCK = ".job.lock"  # in a work folder, locked (flock) by the process running its job
_held_locks: dict[Path, object] = {}  # this process's work-folder locks, by folder


def hold_work_folder(folder: Path) -> None:
    """Lock `folder` for this process's job until `release_work_folder` (or exit): planning
    in another process then leaves it alone, even with another store, and the same job started
    twice at once is refused in one line instead of two processes writing one folder."""
    folder = folder.resolve()
    if folder in _held_locks:
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = (folder / JOB_LOCK).open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InputError(
            f"{folder}: another process is running this job (its work folder is locked); "
            "wait for it to finish, or give this one another --work-dir"
        ) from None
    _held_locks[folder] = handle


def release_work_folder(folder: Path) -> None:
    handle = _held_locks.pop(folder.resolve(), None)
    if handle is not None:
        handle.close()  # closing the file releases its lock


def work_folder_in_use(folder: Path) -> bool:
    """Whether a running job (this process's or another's) holds `folder`'s lock."""
    if folder.resolve() in _held_locks:
        return True
    try:
        handle = (folder / JOB_LOCK).open("r")
    except OSError:
        return False  # no lock file: no job of this version is running there
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def stale_work_folders(root: Path, keep: Path) -> list[Path]:
    """The work folders under `root`, other than `keep`, of jobs whose local input changed or
    went away after their split. Such a job can never resume: its identity, and so its folder
    name, includes each input file's size and modification time, and starting it again makes
    a new folder. Without this its shards (a copy of the whole input) stayed on disk for good.
    Plans with remote inputs (not cheap to list again) or without a recorded fingerprint
    (written before it was recorded), folders whose split never finished, and folders a
    running job holds (`hold_work_folder`) are kept."""
    if not root.is_dir():
        return []
    stale = []
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and path != keep):
        if work_folder_in_use(folder):
            continue
        try:
            plan = load_plan(folder)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a plan this version wrote: leave it alone
        if plan is None or not plan.input_fingerprint:
            continue
        if any(remote_uri(name) for name in plan.inputs):
            continue
        if fingerprint_now(plan.input_fingerprint) != plan.input_fingerprint:
            stale.append(folder)
    return stale


def split_into_shards(
    files: list[InputFile], folder: Path, options: LabelOptions, shard_rows: int
) -> ShardPlan:
    """Read every file once, check its rows as the local engine does, and write the shards;
    an existing complete plan in `folder` is returned as it is (a resumed run). A remote file
    is read through its filesystem into `folder` first (`readable_copy`): workers only ever
    read the shards."""
    if shard_rows < 1:
        raise InputError(f"--shard-rows must be at least 1, got {shard_rows}")
    plan = load_plan(folder)
    if plan is not None:
        return plan
    folder.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(folder, shard_rows)
    duplicates: DuplicateIds | None = None
    for file in files:
        file_options = None
        prefix = f"{file}: " if len(files) > 1 else ""
        with readable_copy(file, folder) as path:
            for chunk in iter_table_chunks(path, options.chunk_size, options.encoding):
                if file_options is None:
                    file_options = resolve_columns(chunk.columns, path, options)
                    duplicates = duplicates or DuplicateIds(file_options)
                first_row = writer.next_row
                _check_chunk(chunk, first_row, file_options, duplicates, prefix)
                writer.add(canonical_rows(chunk, first_row, file_options))
        if file_options is None:
            raise InputError(f"{file}: no rows to label")
    plan = replace(
        writer.close([str(f) for f in files]), input_fingerprint=files_fingerprint(files)
    )
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
