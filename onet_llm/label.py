"""Labeling: posting text -> shortlist -> (optional LLM rerank) -> top K labels -> store -> output.

`label_file` streams the input in chunks; the input is opened once, and its first chunk is
what `postings.open_input` checks before any model loads. Each chunk's rows
(`types.LabelledRow`, with `Candidate` and `Label` objects) are committed to the store with the
run's progress, so a killed run started again with the same input and options resumes after its
last committed chunk; the output file is written from the store once every row is in.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from onet_llm.errors import Interrupted
from onet_llm.interrupts import raise_if_interrupted, watching_interrupts
from onet_llm.output import output_records
from onet_llm.postings import (
    DuplicateIds,
    LabelInput,
    LabelOptions,
    default_output_path,
    empty_row_problem,
    kept_values,
    open_input,
    posting_fields,
    refuse_empty_rows,
)
from onet_llm.shortlist.encoder import Encoder
from onet_llm.shortlist.index import OccupationIndex
from onet_llm.shortlist.text import DEFAULT_TEXT_VARIANT, TextVariant, posting_text
from onet_llm.store import RunRecord, Store
from onet_llm.store.runs import COMPLETE, EMBEDDED, labelled_rows
from onet_llm.tables import TableWriter
from onet_llm.taxonomy import Taxonomy
from onet_llm.types import Candidate, Label, LabelledRow

if TYPE_CHECKING:
    from onet_llm.rerank.reranker import Reranker
    from onet_llm.settings import Settings

# Bodies longer than this are cut before they reach the store (the encoder and any LLM prompt
# see far less); the audit trail keeps what mattered for the decision.
STORED_BODY_CHARACTERS = 4000
Progress = Callable[[int, int | None], None]


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
    ) -> list[LabelledRow]:
        """One row for the store per input row, labelled or carrying an error."""
        ids, titles, bodies = posting_fields(chunk, first_row, options)
        refuse_empty_rows(ids, titles, bodies, first_row, options)
        kept = kept_values(chunk, options) or [None] * len(ids)
        rows = []
        good = []
        for offset, (posting_id, title, body) in enumerate(zip(ids, titles, bodies, strict=True)):
            row = LabelledRow(first_row + offset, posting_id, title, body[:STORED_BODY_CHARACTERS])
            row.kept = kept[offset]
            if empty_row_problem(row.row_number, posting_id, title, body):  # --skip-bad-rows
                row.error = "title and body are both empty"
            else:
                good.append(offset)
            rows.append(row)
        shortlists = self.shortlist(
            [titles[i] for i in good],
            [bodies[i] for i in good],
            options.shortlist_size,
            options.text_variant,
        )
        for offset, shortlist in zip(good, shortlists, strict=True):
            rows[offset].shortlist = shortlist
            rows[offset].labels = [Label.embedding(c) for c in shortlist[: options.top_k]]
            rows[offset].source = "embedding"
        return rows


def needs_llm(row: LabelledRow, settings: Settings) -> bool:
    """The cascade rule: a shortlisted row goes to the LLM always, or with `llm_when=uncertain`
    only when its embedding top-1 is not clearly ahead. The dry run and batch mode ask the
    same question before anything is sent."""
    from onet_llm.rerank.reranker import is_uncertain

    if row.source != "embedding" or row.shortlist is None:
        return False
    return settings.llm_when != "uncertain" or is_uncertain(
        row.shortlist, settings.llm_uncertain_margin
    )


def rerank_rows(
    rows: list[LabelledRow],
    reranker: Reranker,
    top_k: int,
    run_id: str | None,
    on_result: Callable[[object], None] | None = None,
) -> list[LabelledRow]:
    """Send a chunk's shortlisted rows to the LLM (all of them, or with `llm_when=uncertain`
    only those whose embedding top-1 is not clearly ahead) and replace their labels with its
    ranking. Rows not sent keep source='embedding'; failed ones keep the embedding ranking with
    source='fallback' and the error."""
    selected = [row for row in rows if needs_llm(row, reranker.settings)]
    if not selected:
        return rows
    postings = [row.posting for row in selected]
    shortlists = [row.shortlist or [] for row in selected]
    results = reranker.rerank(postings, shortlists, top_k, run_id, on_result)
    for row, result in zip(selected, results, strict=True):
        row.labels = result.labels
        row.source = result.source
        row.error = result.error
        row.call_key = result.call_key
        if result.shortlist is not None:  # infer,rerank: the labels come from the fused list
            row.shortlist = result.shortlist
    return rows


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
    return job_key(payload)


def job_key(payload: list) -> str:
    """A short stable hash of what identifies a job (both engines key their runs with it)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class LabelJob:
    """One labelling job of the local engine: the opened input, where its output goes, and
    the identity (`key`, `fingerprint`) of its run in the store."""

    opened: LabelInput
    output_path: Path
    fingerprint: dict
    key: str


def label_job(
    input_path: Path | LabelInput,
    output_path: Path | None,
    options: LabelOptions,
    settings_fingerprint: dict,
    index_key: str,
) -> LabelJob:
    """The job `label_file` runs: `input_path` may be an input already opened (and checked) by
    `open_input`; the same input, output, settings and index give the same key."""
    opened = input_path if isinstance(input_path, LabelInput) else None
    path = opened.path if opened else Path(input_path)  # type: ignore[arg-type]
    output_path = output_path or default_output_path(path)
    opened = opened or open_input(path, output_path, options)
    fingerprint = {**settings_fingerprint, "options": asdict(opened.options), "index": index_key}
    return LabelJob(opened, output_path, fingerprint, run_key(path, output_path, fingerprint))


def label_file(
    labeler: Labeler,
    store: Store,
    input_path: Path | LabelInput,
    output_path: Path | None,
    options: LabelOptions,
    settings_fingerprint: dict,
    index_key: str,
    on_progress: Progress | None = None,
    reranker: Reranker | None = None,
    before_chunks: Callable[[RunRecord, LabelInput], None] | None = None,
    embedded: str | None = None,
) -> LabelSummary:
    """Label every row of `input_path` into `output_path`, resuming an unfinished identical run.

    `input_path` may be an input already opened (and checked) by `open_input`. With a
    `reranker`, each chunk's shortlists go through the LLM before the chunk is committed; its
    calls are cached as they complete, so a run stopped mid-chunk (Ctrl-C, --max-cost-usd)
    pays nothing again for them when it resumes. `before_chunks(run, opened)` runs once the
    run is known, before any chunk: batch mode submits and waits for its batches there.
    `embedded`: a complete run of this job's embedding stage (`embed_file`), whose committed
    shortlists the chunks are read from instead of being encoded again."""
    started = time.perf_counter()
    job = label_job(input_path, output_path, options, settings_fingerprint, index_key)
    opened, output_path, options = job.opened, job.output_path, job.opened.options
    run = find_or_start_run(
        store, job.key, str(opened.path), output_path, job.fingerprint, labeler, index_key
    )
    try:
        with watching_interrupts():
            if before_chunks is not None:
                before_chunks(run, opened)
            rows = label_chunks(labeler, store, opened, run, on_progress, reranker, embedded)
            raise_if_interrupted()
            sources, code_counts = write_output(store, run.run_id, output_path, options.top_k)
    except KeyboardInterrupt:
        store.finish_run(run.run_id, "interrupted")
        committed = store.rows_committed(run.run_id)
        raise Interrupted(
            f"interrupted: {committed:,} rows are committed to run {run.run_id} and no output "
            "was written; run the same command again to resume after them"
        ) from None
    except BaseException:
        store.finish_run(run.run_id, "failed")  # resumable: the same command picks it up
        raise
    store.finish_run(run.run_id)
    return summarise_run(run, output_path, rows, started, sources, code_counts, labeler.taxonomy)


def complete_embedding_run(store: Store, job: LabelJob) -> RunRecord | None:
    """The latest run of `job` (a job without the LLM stage) if every row of it is committed:
    finished, or an embedding stage kept by a dry run or batch mode; else None."""
    run = store.latest_run(job.key)
    return run if run is not None and run.status in COMPLETE else None


def embed_file(
    labeler: Labeler,
    store: Store,
    job: LabelJob,
    index_key: str,
    on_progress: Progress | None = None,
) -> RunRecord:
    """The embedding stage of `job` (the job `label` without `--llm` makes) as a run of its
    own, complete: taken as it is when it already is, resumed when unfinished, and left with
    status `embedded` (no output written). The dry run and batch mode need every shortlist
    before the LLM stage starts; keeping them in the store means the LLM stage's run
    (`label_file(embedded=...)`) and the same job without `--llm` encode nothing again."""
    complete = complete_embedding_run(store, job)
    if complete is not None:
        if on_progress:
            on_progress(job.opened.total_rows or 0, job.opened.total_rows)
        return complete
    path = job.opened.path
    run = find_or_start_run(
        store, job.key, str(path), job.output_path, job.fingerprint, labeler, index_key
    )
    with watching_interrupts(), finishing(store, run, EMBEDDED):
        label_chunks(labeler, store, job.opened, run, on_progress, None)
        raise_if_interrupted()
    return run


@contextmanager
def finishing(store: Store, run: RunRecord, status: str = "done") -> Iterator[None]:
    """Mark the run `status` (done, or embedded: no output written) when the block completes;
    interrupted or failed (both resumable by the same command) when it does not."""
    try:
        yield
    except KeyboardInterrupt:
        store.finish_run(run.run_id, "interrupted")
        raise Interrupted(
            f"interrupted: {store.rows_committed(run.run_id):,} rows are committed to run "
            f"{run.run_id} and no output was written; run the same command again to resume"
        ) from None
    except BaseException:
        store.finish_run(run.run_id, "failed")
        raise
    store.finish_run(run.run_id, status)


def stored_run_rows(store: Store, run_id: str) -> Iterator[LabelledRow]:
    """Every row a run committed, in input order, as objects: what the dry run prices and
    batch mode submits after the embedding stage (`plan.requests_for_rows`)."""
    for frame in store.iter_run_blocks(run_id):
        yield from labelled_rows(frame)


def stored_chunk(store: Store, run_id: str, first_row: int, rows: int) -> list[LabelledRow]:
    """Rows `first_row ..` of a committed run, read whole (the store's connection is then free
    for the LLM stage's cache lookups)."""
    return labelled_rows(store.row_range(run_id, first_row, rows))


def summarise_run(
    run: RunRecord,
    output_path: Path,
    rows: int,
    started: float,
    sources: dict[str, int],
    code_counts: dict[str, int],
    taxonomy: Taxonomy,
) -> LabelSummary:
    """What a finished run did, for the command's last lines (both engines)."""
    top = sorted(code_counts.items(), key=lambda item: -item[1])[:5]
    return LabelSummary(
        run_id=run.run_id,
        output_path=output_path,
        rows=rows,
        resumed_from=run.rows_done,
        seconds=time.perf_counter() - started,
        sources=sources,
        top_codes=[(code, taxonomy.title(code), n) for code, n in top],
    )


def find_or_start_run(
    store: Store,
    key: str,
    input_name: str,
    output_path: Path,
    fingerprint: dict,
    labeler: Labeler,
    index_key: str,
) -> RunRecord:
    """The unfinished run of the job with this key, to resume, or a new one."""
    run = store.find_unfinished_run(key)
    if run is not None:
        return run
    return store.start_run(
        key,
        "label",
        input_name,
        str(output_path),
        fingerprint,
        labeler.encoder.model_id,
        index_key,
    )


def label_chunks(
    labeler: Labeler,
    store: Store,
    opened: LabelInput,
    run: RunRecord,
    on_progress: Progress | None,
    reranker: Reranker | None,
    embedded: str | None = None,
) -> int:
    """Label and commit every chunk after the run's committed rows; returns the rows seen.
    Committed chunks stay in the store when anything here fails: the same command resumes.
    With `embedded` (a complete embedding-stage run of the same input) a chunk's shortlists
    are read from that run instead of being encoded."""
    options, total, resumed_from = opened.options, opened.total_rows, run.rows_done
    done = 0
    duplicates = DuplicateIds(options)
    store.release()  # readers (ledger, runs, review) may open the store between commits
    if on_progress:
        on_progress(resumed_from, total)
    for chunk in opened.chunks():
        first_row = done + 1
        done += len(chunk)
        duplicates.check(chunk, first_row)
        if done <= resumed_from:
            continue
        if first_row <= resumed_from:  # resume inside a chunk when chunk sizes changed
            chunk = chunk.iloc[resumed_from - first_row + 1 :]
            first_row = resumed_from + 1
        rows = stored_chunk(store, embedded, first_row, len(chunk)) if embedded else []
        if len(rows) != len(chunk):  # not in that run after all: encode, never lose a row
            rows = labeler.label_chunk(chunk, first_row, options)
        if reranker is not None:
            progress = _row_progress(on_progress, first_row - 1, total)
            rows = rerank_rows(rows, reranker, options.top_k, run.run_id, progress)
        raise_if_interrupted()  # a Ctrl-C swallowed mid-chunk: stop before committing it
        store.append_rows(run.run_id, rows)
        store.release()
        if on_progress:
            on_progress(done, total)
    return done


def write_output(
    store: Store, run_id: str, output_path: Path, top_k: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Write the output from the store, atomically; counts of sources and of top-1 codes."""
    return write_rows(store.iter_run_rows(run_id), output_path, top_k)


def write_rows(
    batches: Iterable[pd.DataFrame],
    output_path: Path,
    top_k: int,
    counts: tuple[dict[str, int], dict[str, int]] | None = None,
) -> tuple[dict[str, int], dict[str, int]]:
    """Write store rows (`run_rows` batches) as one output file, atomically; counts of
    sources and of top-1 codes, added to `counts` when given (an output in several files)."""
    writer = TableWriter(output_path)
    sources, code_counts = counts or ({}, {})
    try:
        for rows in batches:
            labels = [
                json.loads(value) if isinstance(value, str) else [] for value in rows["labels"]
            ]
            kept = [json.loads(value) if isinstance(value, str) else {} for value in rows["kept"]]
            writer.write(output_records(rows, labels, kept, top_k, writer.format))
            for source in rows["source"]:
                sources[source] = sources.get(source, 0) + 1
            for row_labels in labels:
                if row_labels:
                    code = row_labels[0]["onet_code"]
                    code_counts[code] = code_counts.get(code, 0) + 1
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return sources, code_counts


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


def open_labeler(
    model: str,
    index_cache_dir: Path,
    representation: str | None = None,
    on_build_progress: Progress | None = None,
    encoder_options: dict | None = None,
) -> tuple[Labeler, str]:
    """Load taxonomy, encoder and the index (shipped in the package for the shipped model,
    else cached, else built with `on_build_progress(texts_done, total)`); returns the labeler
    and the index key. The model's weights load on the first encode; `encoder_options`
    (`Settings.encoder_options()`: backend, threads, batch size) choose how it runs, and an
    ONNX backend is exported into `index_cache_dir` then, once per model."""
    from onet_llm.shortlist.index import (
        DEFAULT_REPRESENTATION,
        index_cache_key,
        load_or_build_index,
    )
    from onet_llm.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    encoder = Encoder(model, export_cache_dir=index_cache_dir, **(encoder_options or {}))
    representation = representation or DEFAULT_REPRESENTATION
    index = load_or_build_index(
        encoder, taxonomy, index_cache_dir, representation, on_progress=on_build_progress
    )
    return Labeler(encoder, index, taxonomy), index_cache_key(encoder, taxonomy, representation)
