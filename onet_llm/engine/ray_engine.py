"""`onet-llm label --engine ray`: the embedding stage on Ray Data, everything else on the driver.

Data flow: the driver splits the input into Parquet shards (`engine.shards`, with the local
engine's checks), puts the occupation index into the object store once, and runs
`from_items(shard paths).map_batches(ShardLabeler)` on an actor pool: each actor loads the
encoder once, reads its shards and labels them a chunk at a time with the local engine's own
`Labeler.label_chunk`, so both engines give the same codes and scores. The driver collects
the rows, and when every row of a shard has arrived it runs the optional LLM stage on them
and commits the shard (rows + marker, one transaction) to its DuckDB store. The output
(Parquet parts + manifest, or one file) is written from the store at the end.

The dry run and `--llm-mode batch` need every row's shortlist before the LLM stage starts:
they run the embedding stage first as a run of its own (`embed_on_ray`: the run the same job
without `--llm` makes, committed shard by shard and resumable like any run), price or submit
from its committed rows (`plan.requests_for_rows`, as the local engine does from its input),
and the LLM stage's run then reads those shards from the store instead of encoding them
again. A sync `--llm` run does the same with whichever shards such a run already holds.

Why the LLM stage and the store stay on the driver: the LLM is bound by the API's rate limit,
not by CPU, and its cache, ledger and budget live in one DuckDB file, which allows one writer
process. Workers never open the store, so a rerun of the same input pays nothing twice and a
killed job resumes after its committed shards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from onet_llm.engine.shards import (
    InputFile,
    Shard,
    ShardPlan,
    files_fingerprint,
    hold_work_folder,
    input_files,
    remote_uri,
    shown_uri,
    split_into_shards,
    stale_work_folders,
    worker_options,
)
from onet_llm.errors import InputError, OnetLLMError
from onet_llm.label import (
    Labeler,
    LabelSummary,
    find_or_start_run,
    finishing,
    job_key,
    rerank_rows,
    summarise_run,
    write_rows,
)
from onet_llm.postings import LabelOptions
from onet_llm.store.runs import COMPLETE, EMBEDDED, RunRecord, labelled_rows, row_records
from onet_llm.tables import EXTENSIONS
from onet_llm.types import LabelledRow

if TYPE_CHECKING:
    from onet_llm.rerank.reranker import Reranker
    from onet_llm.store import Store

RAY_MISSING = "--engine ray needs Ray Data: pip install 'onet-llm[ray]'"
# Each actor runs one encoder thread, on one core, but asks Ray for half a logical CPU: an
# actor pool asking for every CPU leaves Ray Data's file-listing and read tasks (1 CPU each) no
# slot, and the job hangs. Actors are spread over the nodes rather than packed two per CPU.
ACTOR_CPUS = 0.5
MANIFEST = "manifest.json"
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # an existing cluster; None starts a local runtime
    actors: int | None = None  # None: one per CPU of the cluster
    shard_rows: int = 10_000
    work_dir: Path | None = None  # where shards go; on a cluster, a folder every node reads


class ShardLabeler:
    """A Ray Data actor: the encoder loaded once, the index taken from the object store, and
    batches of shard rows labelled into `run_rows` form (JSON strings cross the process
    boundary; the driver stores them as they are)."""

    def __init__(
        self, model: str, encoder_options: dict, index_ref: list, options: LabelOptions
    ) -> None:
        import ray

        from onet_llm.shortlist.encoder import Encoder
        from onet_llm.taxonomy import load_taxonomy

        index = index_from_payload(ray.get(index_ref[0]))
        encoder = Encoder(model, **encoder_options)
        self.labeler = Labeler(encoder, index, load_taxonomy())
        self.options = options

    def __call__(self, batch: pd.DataFrame) -> Iterator[pd.DataFrame]:
        """A batch of shard paths -> their rows labelled, a chunk at a time."""
        import pyarrow.parquet as pq

        for path in batch["path"]:
            shard = pq.read_table(path).to_pandas()
            for start in range(0, len(shard), self.options.chunk_size):
                yield self.label_rows(shard.iloc[start : start + self.options.chunk_size])

    def label_rows(self, chunk: pd.DataFrame) -> pd.DataFrame:
        rows = self.labeler.label_chunk(chunk, 1, self.options)
        for row, number, kept in zip(rows, chunk["row_number"], chunk["kept"], strict=True):
            row.row_number = int(number)
            row.kept = json.loads(kept) if isinstance(kept, str) else None
        frame = row_records(rows)
        frame.insert(0, "shard", chunk["shard"].to_numpy())
        return frame


def index_payload(index) -> tuple[str, Any]:
    """What the object store carries to the actors: a FAISS index as its serialised bytes (it
    is not picklable), a fusion index (plain arrays) as it is."""
    from onet_llm.shortlist.index import OccupationIndex

    if isinstance(index, OccupationIndex):
        return "faiss", index.to_payload()
    return "pickle", index


def index_from_payload(payload: tuple[str, Any]):
    from onet_llm.shortlist.index import OccupationIndex

    kind, value = payload
    return OccupationIndex.from_payload(value) if kind == "faiss" else value


class ShardCollector:
    """Gathers a shard's rows as batches arrive (in any order) and hands each complete shard,
    in row order, to `commit`."""

    def __init__(self, plan: ShardPlan, commit: Callable[[int, pd.DataFrame], None]) -> None:
        self.expected = {shard.index: shard.rows for shard in plan.shards}
        self.commit = commit
        self.parts: dict[int, list[pd.DataFrame]] = {}
        self.received: dict[int, int] = {}

    def add(self, batch: pd.DataFrame) -> None:
        for shard, part in batch.groupby("shard", sort=False):
            shard = int(shard)
            self.parts.setdefault(shard, []).append(part.drop(columns="shard"))
            self.received[shard] = self.received.get(shard, 0) + len(part)
            if self.received[shard] == self.expected[shard]:
                rows = pd.concat(self.parts.pop(shard), ignore_index=True)
                self.commit(shard, rows.sort_values("row_number", ignore_index=True))

    @property
    def pending(self) -> list[int]:
        return sorted(self.parts)


def default_ray_output(spec: str, files: list[Path]) -> Path:
    """A folder of Parquet parts beside the input: `postings.labels/` for `postings.csv` or
    the folder `postings/`; a glob has no obvious place, so it needs `-o`."""
    path = Path(spec)
    if path.is_dir():
        return path.with_name(f"{path.name}.labels")
    if len(files) == 1 and path == files[0]:
        return path.with_name(f"{path.stem}.labels")
    raise InputError(f"{spec}: give -o for the labels of a glob (a folder, or one file)")


def is_single_file_output(output: Path) -> bool:
    return output.suffix.lower() in EXTENSIONS and not output.is_dir()


def ray_run_key(files: list[Path], output: Path, fingerprint: dict) -> str:
    """Identity of a distributed job: the same files (size, mtime), output and settings."""
    return job_key([files_fingerprint(files), str(output.resolve()), fingerprint])


def start_ray(address: str | None):
    """Connect to the cluster at `address`, or start a local runtime on this machine's cores;
    quiet (no dashboard, no progress bars, no usage report: machines may be offline)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.data
    except ImportError:
        raise OnetLLMError(RAY_MISSING) from None
    if not ray.is_initialized():
        settings: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
        }
        if address:
            ray.init(address=address, **settings)
        else:  # "local": a runtime of our own, even beside a cluster this machine belongs to
            ray.init(address="local", num_cpus=os.cpu_count() or 1, **settings)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # not "progress bars disabled"
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return ray


@dataclass(frozen=True)
class RayJob:
    """One distributed job: what it reads and writes, its shards, and the identity of its two
    stages. `embedding_key` is the run `--engine ray` without `--llm` makes of the same job
    (the embedding stage alone); `key` is the job's own, with the LLM stage's settings when
    there is one (else the two are equal)."""

    files: list[InputFile]
    output: Path
    input_name: str  # a URI without its credentials or query: secrets never reach the store
    plan: ShardPlan
    work: Path
    fingerprint: dict
    key: str
    embedding_fingerprint: dict
    embedding_key: str
    removed_stale: int = 0  # work folders of jobs whose input changed, removed when planning


def plan_job(
    spec: str,
    output: Path | None,
    options: LabelOptions,
    settings_fingerprint: dict,
    index_key: str,
    ray_options: RayOptions,
    home: Path,
) -> RayJob:
    """The job's files, output, identities and shard plan (the input is split here, once: a
    resumed job, or the real run after a dry run, finds the plan in the work folder)."""
    files = input_files(spec)
    output = output or default_ray_output(spec, files)
    fingerprint = {
        **settings_fingerprint,
        "options": asdict(options),
        "index": index_key,
        "engine": "ray",
        "shard_rows": ray_options.shard_rows,
    }
    embedding = {name: value for name, value in fingerprint.items() if name != "llm"}
    key = ray_run_key(files, output, fingerprint)
    embedding_key = key if embedding == fingerprint else ray_run_key(files, output, embedding)
    work = (ray_options.work_dir or home / "ray") / embedding_key
    hold_work_folder(work)  # until the job ends (`release_work_folder`) or the process exits
    stale = stale_work_folders(work.parent, work)
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    plan = split_into_shards(files, work, options, ray_options.shard_rows)
    remote = remote_uri(spec)
    input_name = shown_uri(remote) if remote else spec
    return RayJob(
        files, output, input_name, plan, work, fingerprint, key, embedding, embedding_key,
        len(stale),
    )  # fmt: skip


def label_with_ray(
    labeler: Labeler,
    index_key: str,
    store: Store,
    job: RayJob,
    options: LabelOptions,
    ray_options: RayOptions,
    on_progress: Progress | None = None,
    reranker: Reranker | None = None,
    before_shards: Callable[[RunRecord], None] | None = None,
) -> LabelSummary:
    """Label every row of the job with Ray Data, resuming an unfinished identical run, and
    write the output. With a `reranker`, a shard that the job's embedding stage has committed
    (a dry run, batch mode, or the same job without `--llm`) is read from the store instead of
    being encoded again. `before_shards(run)` runs once the run is known, before any shard:
    batch mode submits and waits for its batches there."""
    started = time.perf_counter()
    run = find_or_start_run(
        store, job.key, job.input_name, job.output, job.fingerprint, labeler, index_key
    )
    embedded = None
    if reranker is not None and job.embedding_key != job.key:
        found = store.latest_run(job.embedding_key)
        embedded = found.run_id if found else None
    with finishing(store, run):
        if before_shards is not None:
            before_shards(run)
        label_shards(
            labeler, store, run.run_id, job.plan, options, ray_options, on_progress, reranker,
            embedded,
        )  # fmt: skip
        sources, codes = write_ray_output(store, run.run_id, job.plan, job.output, options.top_k)
    shutil.rmtree(job.work, ignore_errors=True)
    return summarise_run(
        run, job.output, job.plan.total_rows, started, sources, codes, labeler.taxonomy
    )


def embed_on_ray(
    labeler: Labeler,
    index_key: str,
    store: Store,
    job: RayJob,
    options: LabelOptions,
    ray_options: RayOptions,
    on_progress: Progress | None = None,
) -> RunRecord:
    """The job's embedding stage as a run of its own, complete: the run `--engine ray`
    without `--llm` makes of this job, resumed when unfinished and taken as it is when done,
    but with no output written (the LLM stage's run writes it). Its rows stay in the store and
    its shards in the work folder, for the LLM stage (`label_with_ray`) to start from: the dry
    run and batch mode need every shortlist before the LLM stage starts."""
    previous = store.latest_run(job.embedding_key)
    if previous is not None and previous.status in COMPLETE:
        if on_progress:
            on_progress(job.plan.total_rows, job.plan.total_rows)
        return previous
    run = find_or_start_run(
        store, job.embedding_key, job.input_name, job.output, job.embedding_fingerprint,
        labeler, index_key,
    )  # fmt: skip
    with finishing(store, run, EMBEDDED):
        label_shards(labeler, store, run.run_id, job.plan, options, ray_options, on_progress, None)
    return run


def stored_shard(store: Store, run_id: str, shard: Shard) -> pd.DataFrame:
    """A committed shard's rows in `run_rows` form, read whole (the store's connection is then
    free for the cache lookups of whoever reads them)."""
    return store.row_range(run_id, shard.first_row, shard.rows).drop(columns="run_id")


def stored_rows(store: Store, run_id: str, plan: ShardPlan) -> Iterator[LabelledRow]:
    """Every row a run committed, in input order, a shard at a time: what the dry run prices
    and batch mode submits (`plan.requests_for_rows`) after the embedding stage."""
    for shard in plan.shards:
        yield from labelled_rows(stored_shard(store, run_id, shard))


def label_shards(
    labeler: Labeler,
    store: Store,
    run_id: str,
    plan: ShardPlan,
    options: LabelOptions,
    ray_options: RayOptions,
    on_progress: Progress | None,
    reranker: Reranker | None,
    embedded: str | None = None,
) -> None:
    """Commit each shard not yet in the run, with the LLM stage first when there is a
    `reranker`: its rows read from the embedding stage's run `embedded` when that run holds
    the shard, else labelled on the actor pool as they complete."""
    finished = store.finished_shards(run_id)
    todo = [shard for shard in plan.shards if shard.index not in finished]
    done = [plan.total_rows - sum(shard.rows for shard in todo)]
    stored = store.finished_shards(embedded) if embedded else set()
    store.release()
    if on_progress:
        on_progress(done[0], plan.total_rows)
    by_index = plan.by_index

    def commit(shard: int, rows: pd.DataFrame) -> None:
        if reranker is not None:
            objects = rerank_rows(labelled_rows(rows), reranker, options.top_k, run_id)
            rows = row_records(objects)
        store.append_rows(run_id, rows, shard=(shard, by_index[shard].first_row))
        store.release()
        done[0] += len(rows)
        if on_progress:
            on_progress(done[0], plan.total_rows)

    if embedded is not None:
        for shard in (shard for shard in todo if shard.index in stored):
            commit(shard.index, stored_shard(store, embedded, shard))
        todo = [shard for shard in todo if shard.index not in stored]
    if not todo:
        return
    collector = ShardCollector(plan, commit)
    batches = shard_dataset(labeler, [s.path for s in todo], options, ray_options)
    try:
        for batch in batches:
            collector.add(batch)
    except OnetLLMError:
        raise
    except Exception as error:  # a worker's failure arrives as Ray's wrapped traceback
        if type(error).__module__.startswith("ray"):
            cause = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
            raise OnetLLMError(f"a Ray worker failed: {cause}") from error
        raise
    if collector.pending:
        raise OnetLLMError(f"Ray returned shards {collector.pending} incomplete; run again")


def shard_dataset(labeler: Labeler, paths: list[str], options: LabelOptions, ray_options):
    """Batches of labelled shard rows from the actor pool, as they complete."""
    ray = start_ray(ray_options.address)
    actors = ray_options.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    actors = min(actors, len(paths))  # an actor without a shard would only load the model
    encoder = labeler.encoder
    encoder_options = {
        "backend": encoder.backend,
        "batch_size": encoder.batch_size,
        "threads": encoder.threads or 1,  # one core per actor
        "export_cache_dir": encoder.export_cache_dir,  # ONNX backends: exported once per node
    }
    # The shard paths, not Ray's Parquet reader: the actors read their shards themselves (the
    # reader's path resolution fails for a list of files when aiohttp is not installed).
    # One block per shard, so that every actor gets shards to read (one block of all the paths
    # would go to a single actor).
    dataset = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=len(paths))
    dataset = dataset.map_batches(
        ShardLabeler,
        fn_constructor_kwargs={
            "model": worker_model_name(encoder.name),
            "encoder_options": encoder_options,
            "index_ref": [ray.put(index_payload(labeler.index))],
            "options": worker_options(options),
        },
        batch_size=1,
        batch_format="pandas",
        # One shard at a time per actor: by default an actor takes several, and the first
        # actor would take every shard of a small job while the others wait.
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
        num_cpus=ACTOR_CPUS,
        scheduling_strategy="SPREAD",
    )
    yield from dataset.iter_batches(batch_size=None, batch_format="pandas")


def worker_model_name(name: str) -> str:
    """A model folder as an absolute path (workers do not share the driver's working folder);
    a name such as "default" as it is."""
    path = Path(name)
    return str(path.resolve()) if path.exists() else name


def write_ray_output(
    store: Store, run_id: str, plan: ShardPlan, output: Path, top_k: int
) -> tuple[dict[str, int], dict[str, int]]:
    """One file when `output` has a table extension; otherwise a folder of Parquet parts, one
    per shard, and a manifest written last (its presence says the folder is complete)."""
    if is_single_file_output(output):
        return write_rows(store.iter_run_rows(run_id), output, top_k)
    output.mkdir(parents=True, exist_ok=True)
    (output / MANIFEST).unlink(missing_ok=True)
    counts: tuple[dict[str, int], dict[str, int]] = ({}, {})
    parts = []
    for shard in plan.shards:
        name = f"part-{shard.index:05d}.parquet"
        batches = store.iter_row_range(run_id, shard.first_row, shard.rows)
        write_rows(batches, output / name, top_k, counts)
        parts.append({"file": name, "first_row": shard.first_row, "rows": shard.rows})
    written = {part["file"] for part in parts}
    for stale in output.glob("part-*.parquet"):
        if stale.name not in written:
            stale.unlink()
    manifest = {"run_id": run_id, "rows": plan.total_rows, "inputs": plan.inputs, "parts": parts}
    (output / f".{MANIFEST}.partial").write_text(json.dumps(manifest, indent=1))
    (output / f".{MANIFEST}.partial").replace(output / MANIFEST)
    return counts
