"""Labelling runs and their rows.

A run's rows are committed chunk by chunk together with the run's progress counter, so a killed
run resumes after its last committed chunk. Rows arrive as `LabelledRow` objects and are
serialised here, once: shortlists and labels become the JSON columns of `run_rows`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from onet_llm.store.db import Database, now
from onet_llm.types import Candidate, Label, LabelledRow


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    run_key: str
    status: str
    rows_done: int
    output_path: str | None


# Rows sorted at a time when a run is read back in order: 10,000 rows with 4,000-character
# bodies and their shortlists are about 60 MB, well inside the store's memory cap.
ROWS_PER_SORT = 10_000
# A run whose every row is committed but whose output was never written: the embedding stage
# of a dry run or of batch mode (`label.embed_file`, `embed_on_ray`). The same command
# without `--llm` resumes it and only writes the output.
EMBEDDED = "embedded"
COMPLETE = ("done", EMBEDDED)  # every row of the run is committed
RESUMABLE = ("running", "interrupted", "failed", EMBEDDED)  # what `find_unfinished_run` takes
RUN_ROW_COLUMNS = [
    "run_id",
    "row_number",
    "posting_id",
    "title",
    "body",
    "shortlist",
    "labels",
    "source",
    "error",
    "call_key",
    "kept",
]


def row_records(rows: Sequence[LabelledRow]) -> pd.DataFrame:
    """`run_rows` columns for a chunk of rows (run_id left for the caller)."""
    return pd.DataFrame(
        [
            {
                "row_number": row.row_number,
                "posting_id": row.posting_id,
                "title": row.title,
                "body": row.body,
                "shortlist": None
                if row.shortlist is None
                else json.dumps([candidate.as_record() for candidate in row.shortlist]),
                "labels": None
                if row.labels is None
                else json.dumps([label.as_record() for label in row.labels]),
                "source": row.source,
                "error": row.error,
                "call_key": row.call_key,
                "kept": json.dumps(row.kept) if row.kept else None,
            }
            for row in rows
        ],
        columns=RUN_ROW_COLUMNS[1:],
    )


def labelled_rows(frame: pd.DataFrame) -> list[LabelledRow]:
    """The inverse of `row_records`: rows that crossed a process boundary in `run_rows` form
    (a Ray worker's output) back as objects, for the LLM stage on the driver."""

    def parsed(value: object) -> list[dict] | None:
        return json.loads(value) if isinstance(value, str) else None

    rows = []
    for record in frame.to_dict(orient="records"):
        shortlist, labels = parsed(record["shortlist"]), parsed(record["labels"])
        kept = record.get("kept")
        rows.append(
            LabelledRow(
                row_number=int(record["row_number"]),
                posting_id=record["posting_id"],
                title=record["title"],
                body=record["body"],
                shortlist=None if shortlist is None else [Candidate(**c) for c in shortlist],
                labels=None if labels is None else [Label(**label) for label in labels],
                source=record["source"],
                error=record["error"] if isinstance(record["error"], str) else None,
                call_key=record["call_key"] if isinstance(record["call_key"], str) else None,
                kept=json.loads(kept) if isinstance(kept, str) else None,
            )
        )
    return rows


class RunTables(Database):
    def find_unfinished_run(self, run_key: str) -> RunRecord | None:
        """The latest run of this job that did not finish (still running when it was killed,
        interrupted, or stopped by an error; or `embedded`: every row committed by the
        embedding stage of a dry run or batch mode, its output never written), marked running
        again to be resumed."""
        row = self.db.execute(
            "SELECT run_id, run_key, status, rows_done, output_path FROM runs "
            "WHERE run_key = ? AND list_contains(?, status) ORDER BY started_at DESC LIMIT 1",
            [run_key, list(RESUMABLE)],
        ).fetchone()
        if row is None:
            return None
        self.db.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", [row[0]])
        return RunRecord(row[0], row[1], "running", row[3], row[4])

    def latest_run(self, run_key: str) -> RunRecord | None:
        """The latest run of this job, whatever its status (its committed shards are whole);
        unlike `find_unfinished_run`, nothing is marked."""
        row = self.db.execute(
            "SELECT run_id, run_key, status, rows_done, output_path FROM runs "
            "WHERE run_key = ? ORDER BY started_at DESC LIMIT 1",
            [run_key],
        ).fetchone()
        return None if row is None else RunRecord(row[0], row[1], row[2], int(row[3]), row[4])

    def rows_committed(self, run_id: str) -> int:
        row = self.db.execute("SELECT rows_done FROM runs WHERE run_id = ?", [run_id]).fetchone()
        return int(row[0]) if row else 0

    def fallback_reasons(self, run_id: str, most: int = 3) -> list[tuple[str, int]]:
        """Why rows of a run fell back to the embedding ranking, most frequent first."""
        return self.db.execute(
            "SELECT coalesce(error, 'no reason recorded'), count(*) AS n FROM run_rows "
            "WHERE run_id = ? AND source = 'fallback' GROUP BY ALL ORDER BY n DESC, 1 LIMIT ?",
            [run_id, most],
        ).fetchall()

    def start_run(
        self,
        run_key: str,
        command: str,
        input_path: str | None,
        output_path: str | None,
        settings: dict,
        model_id: str,
        index_key: str,
    ) -> RunRecord:
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', 0, ?, NULL)",
            [
                run_id,
                run_key,
                command,
                input_path,
                output_path,
                json.dumps(settings),
                model_id,
                index_key,
                now(),
            ],
        )
        return RunRecord(run_id, run_key, "running", 0, output_path)

    def append_rows(
        self,
        run_id: str,
        rows: Sequence[LabelledRow] | pd.DataFrame,
        shard: tuple[int, int] | None = None,
    ) -> int:
        """Commit one chunk's rows and advance the run's counter in one transaction. `rows` are
        `LabelledRow`s, or a frame already in `run_rows` form (JSON strings). With `shard`
        (index, first row: `label --engine ray`) the shard's marker is committed with them, so
        a shard is either wholly in the store or not at all."""
        if not isinstance(rows, pd.DataFrame):
            rows = row_records(rows)
        frame = rows.reindex(columns=RUN_ROW_COLUMNS)
        frame["run_id"] = run_id
        with self.transaction() as db:
            db.register("chunk_rows", frame)
            db.execute("INSERT INTO run_rows SELECT * FROM chunk_rows")
            db.unregister("chunk_rows")
            if shard is not None:
                db.execute(
                    "INSERT INTO run_shards VALUES (?, ?, ?, ?, ?)",
                    [run_id, shard[0], shard[1], len(frame), now()],
                )
            db.execute(
                "UPDATE runs SET rows_done = rows_done + ? WHERE run_id = ?", [len(frame), run_id]
            )
        return len(frame)

    def finished_shards(self, run_id: str) -> set[int]:
        rows = self.db.execute("SELECT shard FROM run_shards WHERE run_id = ?", [run_id])
        return {int(row[0]) for row in rows.fetchall()}

    def iter_row_range(
        self, run_id: str, first_row: int, rows: int, batch_size: int = 5000
    ) -> Iterator[pd.DataFrame]:
        """Rows `first_row .. first_row + rows - 1` of a run, in input order (one output shard)."""
        result = self.db.execute(
            "SELECT * FROM run_rows WHERE run_id = ? AND row_number >= ? AND row_number < ? "
            "ORDER BY row_number",
            [run_id, first_row, first_row + rows],
        )
        while not (batch := result.fetch_df_chunk(max(1, batch_size // 2048))).empty:
            yield batch

    def finish_run(self, run_id: str, status: str = "done") -> None:
        self.db.execute(
            "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status, now(), run_id]
        )

    def iter_run_rows(self, run_id: str, batch_size: int = 5000) -> Iterator[pd.DataFrame]:
        """A run's rows in input order, a batch at a time (the output is rebuilt from these).
        Read in ranges of row numbers, each sorted on its own: one ORDER BY over a million
        rows does not fit the store's 256 MB memory cap (measured: out of memory)."""
        for first in self._range_starts(run_id):
            yield from self.iter_row_range(run_id, first, ROWS_PER_SORT, batch_size)

    def _range_starts(self, run_id: str) -> range:
        """The first row number of each `ROWS_PER_SORT` range a run's rows fall in."""
        low, high = self.db.execute(
            "SELECT min(row_number), max(row_number) FROM run_rows WHERE run_id = ?", [run_id]
        ).fetchone()
        if low is None:
            return range(0)
        return range(int(low), int(high) + 1, ROWS_PER_SORT)

    def row_range(self, run_id: str, first_row: int, rows: int) -> pd.DataFrame:
        """Rows `first_row .. first_row + rows - 1` of a run, in input order, read whole (no
        result stays open: the caller may use the store meanwhile, e.g. for cache lookups);
        empty when the run holds none of them."""
        frames = list(self.iter_row_range(run_id, first_row, rows))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def iter_run_blocks(self, run_id: str) -> Iterator[pd.DataFrame]:
        """A run's rows in input order, `ROWS_PER_SORT` row numbers at a time, each block read
        whole (`row_range`): unlike `iter_run_rows`, the caller may use the store between
        blocks (the dry run and batch mode look each row up in the cache)."""
        for first in self._range_starts(run_id):
            block = self.row_range(run_id, first, ROWS_PER_SORT)
            if len(block):
                yield block

    def runs(self) -> pd.DataFrame:
        return self.db.execute("SELECT * FROM runs ORDER BY started_at").df()

    def run_overview(self, limit: int | None = None) -> pd.DataFrame:
        """Runs, newest first, with their rows by source (for `onet-llm runs`)."""
        query = """
            SELECT r.run_id, r.status, r.command, r.input_path, r.output_path, r.model_id,
                   r.rows_done, r.started_at, r.finished_at,
                   (SELECT coalesce(json_group_object(source, n), '{}')
                      FROM (SELECT source, count(*)::INTEGER AS n FROM run_rows
                            WHERE run_rows.run_id = r.run_id GROUP BY source ORDER BY source))
                   AS sources
            FROM runs r ORDER BY r.started_at DESC
        """
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return self.db.execute(query).df()
