"""Labeler: posting text -> encoder -> shortlist from the index -> top K labels -> store -> output.

`label_file` streams the input in chunks. Each chunk's results are committed to the store with
the run's progress, so a killed run started again with the same input and options resumes after
its last committed chunk; the output file is written from the store once every row is in.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from onet_llm.encoder import Encoder
from onet_llm.errors import InputError
from onet_llm.index import OccupationIndex
from onet_llm.store import RunRecord, Store
from onet_llm.tables import TableWriter, count_rows, iter_table_chunks, table_format
from onet_llm.taxonomy import Taxonomy
from onet_llm.text import DEFAULT_TEXT_VARIANT, TextVariant, posting_text

if TYPE_CHECKING:
    from onet_llm.rerank import Reranker

# Bodies longer than this are cut before they reach the store (the encoder and any LLM prompt
# see far less); the audit trail keeps what mattered for the decision.
STORED_BODY_CHARACTERS = 4000


@dataclass(frozen=True)
class Candidate:
    onet_code: str
    onet_title: str
    score: float


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
        if not 1 <= self.top_k <= self.shortlist_size:
            raise InputError(
                f"--top-k must be between 1 and --shortlist-size ({self.shortlist_size}), "
                f"got {self.top_k}"
            )


@dataclass(frozen=True)
class LabelSummary:
    run_id: str
    output_path: Path
    rows: int
    resumed_from: int
    seconds: float
    sources: dict[str, int]
    top_codes: list[tuple[str, str, int]]


class Labeler:
    """Shortlists occupations for postings with one encoder and one index."""

    def __init__(self, encoder: Encoder, index: OccupationIndex, taxonomy: Taxonomy) -> None:
        self.encoder = encoder
        self.index = index
        self.taxonomy = taxonomy

    def shortlist(
        self,
        titles: list[str],
        bodies: list[str],
        size: int = 20,
        text_variant: TextVariant = DEFAULT_TEXT_VARIANT,
    ) -> list[list[Candidate]]:
        """Best `size` occupations per posting, best first."""
        texts = [posting_text(t, b, text_variant) for t, b in zip(titles, bodies, strict=True)]
        positions, scores = self.index.search(self.encoder.encode(texts), size)
        occupations = self.taxonomy.occupations
        return [
            [
                Candidate(occupations[p].code, occupations[p].title, round(float(s), 6))
                for p, s in zip(row_positions, row_scores, strict=True)
                if p >= 0
            ]
            for row_positions, row_scores in zip(positions, scores, strict=True)
        ]

    def label_chunk(
        self, chunk: pd.DataFrame, first_row: int, options: LabelOptions
    ) -> pd.DataFrame:
        """Rows for the store: one per input row, labelled or carrying an error."""
        ids, titles, bodies = posting_fields(chunk, first_row, options)
        records = []
        good = []
        for offset, (posting_id, title, body) in enumerate(zip(ids, titles, bodies, strict=True)):
            row_number = first_row + offset
            record = {
                "row_number": row_number,
                "posting_id": posting_id,
                "title": title,
                "body": body[:STORED_BODY_CHARACTERS],
                "shortlist": None,
                "labels": None,
                "source": "error",
                "error": None,
                "call_key": None,
            }
            if not title.strip() and not body.strip():
                problem = f"row {row_number} (id {posting_id!r}): title and body are both empty"
                if not options.skip_bad_rows:
                    raise InputError(problem + " (pass --skip-bad-rows to keep going)")
                record["error"] = "title and body are both empty"
            else:
                good.append(offset)
            records.append(record)
        shortlists = self.shortlist(
            [titles[i] for i in good],
            [bodies[i] for i in good],
            options.shortlist_size,
            options.text_variant,
        )
        for offset, shortlist in zip(good, shortlists, strict=True):
            candidates = [asdict(candidate) for candidate in shortlist]
            records[offset].update(
                shortlist=json.dumps(candidates),
                labels=json.dumps(candidates[: options.top_k]),
                source="embedding",
            )
        return pd.DataFrame(records)


def rerank_rows(
    rows: pd.DataFrame,
    reranker: Reranker,
    top_k: int,
    run_id: str | None,
    on_result: Callable[[object], None] | None = None,
) -> pd.DataFrame:
    """Send a chunk's shortlisted rows to the LLM (all of them, or with `llm_when=uncertain`
    only those whose embedding top-1 is not clearly ahead) and replace their labels with its
    ranking. Rows not sent keep source='embedding'; failed ones keep the embedding ranking with
    source='fallback' and the error."""
    from onet_llm.rerank import Posting, is_uncertain

    settings = reranker.settings
    selected: list[tuple[int, list[Candidate]]] = []
    for position, (source, shortlist) in enumerate(
        zip(rows["source"], rows["shortlist"], strict=True)
    ):
        if source != "embedding":
            continue
        candidates = [Candidate(**candidate) for candidate in json.loads(shortlist)]
        if settings.llm_when == "uncertain" and not is_uncertain(
            candidates, settings.llm_uncertain_margin
        ):
            continue
        selected.append((position, candidates))
    if not selected:
        return rows
    postings = [
        Posting(
            str(rows["posting_id"].iat[position]),
            str(rows["title"].iat[position]),
            str(rows["body"].iat[position]),
        )
        for position, _ in selected
    ]
    results = reranker.rerank(postings, [c for _, c in selected], top_k, run_id, on_result)
    rows = rows.copy()
    for (position, _), result in zip(selected, results, strict=True):
        rows.iat[position, rows.columns.get_loc("labels")] = json.dumps(result.labels)
        rows.iat[position, rows.columns.get_loc("source")] = result.source
        rows.iat[position, rows.columns.get_loc("error")] = result.error
        rows.iat[position, rows.columns.get_loc("call_key")] = result.call_key
    return rows


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


def check_input(input_path: Path, output_path: Path | None, options: LabelOptions) -> LabelOptions:
    """Fail fast, before any model loads, on a file that cannot be labelled; returns the options
    with the id column resolved ("id" when present and not given)."""
    table_format(input_path)
    if output_path is not None:
        table_format(output_path)
    first_chunk = next(iter_table_chunks(input_path, min(options.chunk_size, 100)))
    check_columns(first_chunk.columns, input_path, options)
    if first_chunk.empty:
        raise InputError(f"{input_path}: no rows to label")
    id_column = options.id_column or ("id" if "id" in first_chunk.columns else None)
    return LabelOptions(**{**asdict(options), "id_column": id_column})


def default_output_path(input_path: Path) -> Path:
    return input_path.with_name(f"{input_path.stem}.labels.csv")


def run_key(input_path: Path, output_path: Path, fingerprint: dict) -> str:
    """Identity of a labelling job: same file (size, mtime), same output, same settings."""
    stat = input_path.stat()
    payload = [
        str(input_path.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
        str(output_path.resolve()),
        fingerprint,
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def output_records(rows: pd.DataFrame, top_k: int, file_format: str) -> pd.DataFrame | list[dict]:
    """Store rows -> the output layout: wide columns for CSV/Parquet, nested labels for JSONL."""
    labels = [json.loads(value) if isinstance(value, str) else [] for value in rows["labels"]]
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


def label_file(
    labeler: Labeler,
    store: Store,
    input_path: Path,
    output_path: Path | None,
    options: LabelOptions,
    settings_fingerprint: dict,
    index_key: str,
    on_progress: Callable[[int, int | None], None] | None = None,
    reranker: Reranker | None = None,
) -> LabelSummary:
    """Label every row of `input_path` into `output_path`, resuming an unfinished identical run.

    With a `reranker`, each chunk's shortlists go through the LLM before the chunk is committed;
    its calls are cached as they complete, so a run stopped mid-chunk (Ctrl-C, --max-cost-usd)
    pays nothing again for them when it resumes."""
    started = time.perf_counter()
    output_path = output_path or default_output_path(input_path)
    options = check_input(input_path, output_path, options)
    chunks = iter_table_chunks(input_path, options.chunk_size)
    first_chunk = next(chunks)

    fingerprint = {**settings_fingerprint, "options": asdict(options), "index": index_key}
    key = run_key(input_path, output_path, fingerprint)
    run: RunRecord | None = store.find_unfinished_run(key)
    if run is None:
        run = store.start_run(
            key,
            "label",
            str(input_path),
            str(output_path),
            fingerprint,
            labeler.encoder.model_id,
            index_key,
        )
    resumed_from = run.rows_done
    total = count_rows(input_path)
    done = 0
    if on_progress:
        on_progress(resumed_from, total)
    # Committed chunks stay in the store when anything below fails: the same command resumes.
    for chunk in _chain(first_chunk, chunks):
        first_row = done + 1
        done += len(chunk)
        if done <= resumed_from:
            continue
        if first_row <= resumed_from:  # resume inside a chunk when chunk sizes changed
            chunk = chunk.iloc[resumed_from - first_row + 1 :]
            first_row = resumed_from + 1
        rows = labeler.label_chunk(chunk, first_row, options)
        if reranker is not None:
            rows = rerank_rows(
                rows,
                reranker,
                options.top_k,
                run.run_id,
                _row_progress(on_progress, first_row - 1, total),
            )
        store.append_rows(run.run_id, rows)
        if on_progress:
            on_progress(done, total)

    writer = TableWriter(output_path)
    sources: dict[str, int] = {}
    code_counts: dict[str, int] = {}
    try:
        for rows in store.iter_run_rows(run.run_id):
            writer.write(output_records(rows, options.top_k, writer.format))
            for source in rows["source"]:
                sources[source] = sources.get(source, 0) + 1
            for value in rows["labels"]:
                if isinstance(value, str) and value != "[]":
                    code = json.loads(value)[0]["onet_code"]
                    code_counts[code] = code_counts.get(code, 0) + 1
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    store.finish_run(run.run_id)
    top = sorted(code_counts.items(), key=lambda item: -item[1])[:5]
    return LabelSummary(
        run_id=run.run_id,
        output_path=output_path,
        rows=done,
        resumed_from=resumed_from,
        seconds=time.perf_counter() - started,
        sources=sources,
        top_codes=[(code, labeler.taxonomy.title(code), n) for code, n in top],
    )


def _row_progress(
    on_progress: Callable[[int, int | None], None] | None, done_before: int, total: int | None
) -> Callable[[object], None] | None:
    """Per-posting progress inside a chunk while the LLM works (it is slow); called from the
    rerank worker threads, hence the lock."""
    if on_progress is None:
        return None
    lock = threading.Lock()
    finished = [done_before]

    def advance(_result: object) -> None:
        with lock:
            finished[0] += 1
            on_progress(finished[0], total)

    return advance


def _chain(first: pd.DataFrame, rest: Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
    yield first
    yield from rest


def open_labeler(
    model: str, index_cache_dir: Path, representation: str | None = None
) -> tuple[Labeler, str]:
    """Load taxonomy, encoder and the (cached) index; returns the labeler and the index key."""
    from onet_llm.index import DEFAULT_REPRESENTATION, index_cache_key, load_or_build_index
    from onet_llm.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    encoder = Encoder(model)
    representation = representation or DEFAULT_REPRESENTATION
    index = load_or_build_index(encoder, taxonomy, index_cache_dir, representation)
    return Labeler(encoder, index, taxonomy), index_cache_key(encoder, taxonomy, representation)
