"""How fast the review page's queries are on a large run (medians of repeated calls).

Copies the rows of an existing labelling run (default: the newest in --store) until the run has
--rows rows, in a new store file, records some decisions, then times the counts bar and one page
of rows for each view and for a free-text search.

    python benchmarks/review_page.py --store ~/.cache/onet-llm/store.duckdb --rows 200000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from onet_llm.review.queries import VIEWS, ReviewFilter, filter_counts, resolve_run, review_rows
from onet_llm.store import Store


def median_seconds(work, repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds (CPU summed over DuckDB's threads: on a shared machine
    the wall clock also measures the neighbours)."""
    walls, cpus = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        work()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - started_cpu)
    return statistics.median(walls), statistics.median(cpus)


def report(label: str, seconds: tuple[float, float]) -> None:
    print(f"{label:<40} {seconds[0] * 1000:>10.0f} {seconds[1] * 1000:>10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--run", default=None)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="review-bench-"))
    try:
        copy = folder / "store.duckdb"
        shutil.copy(arguments.store, copy)
        with Store(copy) as store:
            run_id = resolve_run(store, arguments.run).run_id
            source_rows = store.db.execute(
                "SELECT count(*) FROM run_rows WHERE run_id = ?", [run_id]
            ).fetchone()[0]
            copies = max(1, -(-arguments.rows // source_rows))
            store.db.execute(
                "CREATE TEMP TABLE seed AS SELECT * FROM run_rows WHERE run_id = ?", [run_id]
            )
            store.db.execute("DELETE FROM run_rows WHERE run_id = ?", [run_id])
            store.db.execute(
                "INSERT INTO run_rows SELECT s.run_id, (c.i * $n) + s.row_number, s.posting_id, "
                "s.title, s.body, s.shortlist, s.labels, s.source, s.error, s.call_key "
                "FROM seed s, range($copies) AS c(i)",
                {"n": source_rows, "copies": copies},
            )
            store.db.execute(
                "INSERT INTO review_decisions (run_id, row_number, posting_id, action, onet_code, "
                "onet_title, previous_onet_code, previous_onet_title, reviewer, note, decided_at) "
                "SELECT run_id, row_number, posting_id, 'accept', '29-1141.00', "
                "'Registered Nurses', NULL, NULL, 'bench', '', now() FROM run_rows "
                "WHERE run_id = ? AND row_number % 50 = 0",
                [run_id],
            )
            total = store.db.execute(
                "SELECT count(*) FROM run_rows WHERE run_id = ?", [run_id]
            ).fetchone()[0]
            print(
                f"run {run_id}: {total:,} rows ({copies} copies of {source_rows}), 1 in 50 reviewed"
            )
            print(f"{'query':<40} {'wall ms':>10} {'cpu ms':>10}")
            counts = median_seconds(
                lambda: filter_counts(store, run_id, ReviewFilter()), arguments.repeats
            )
            report("counts bar (6 views)", counts)
            for view in VIEWS:
                seconds = median_seconds(
                    lambda view=view: review_rows(store, run_id, ReviewFilter(view=view)),
                    arguments.repeats,
                )
                report(f"counts + page of 50, view {view}", seconds)
            for label, review_filter in (
                ("counts + page, search 'nurse'", ReviewFilter(text="nurse")),
                ("counts + page, major group 29", ReviewFilter(major_group="29")),
                ("counts + page, sort by confidence", ReviewFilter(sort="confidence_asc")),
                ("counts + last page", ReviewFilter(page=max(1, total // 50))),
            ):
                seconds = median_seconds(
                    lambda f=review_filter: review_rows(store, run_id, f), arguments.repeats
                )
                report(label, seconds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
