"""How fast the review page is on a large run (medians of repeated calls).

Copies the rows of an existing labelling run (default: the newest in --store) until the run has
--rows rows, in a new store file, records some decisions, queues and an audit sample, then
times the counts bar and one page of rows for each view and filter, and the whole page over
HTTP from a real review server (first page cold, i.e. with the filter facts still to build,
then warm, then each filter).

    python benchmarks/review_page.py --store ~/.cache/onet-llm/store.duckdb --rows 100000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from onet_llm.review.queries import VIEWS, ReviewFilter, filter_counts, resolve_run, review_rows
from onet_llm.review.queues import assign_queues
from onet_llm.review.sampling import draw_sample
from onet_llm.review.server import ReviewServer, bind, open_review
from onet_llm.store import Store


def median_seconds(work, repeats: int, store: Store | None = None) -> tuple[float, float]:
    """Median wall-clock and CPU seconds (CPU summed over DuckDB's threads: on a shared machine
    the wall clock also measures the neighbours). The page opens the store per request, so
    the per-store text-match cache is emptied before each repeat."""
    walls, cpus = [], []
    for _ in range(repeats):
        if store is not None:
            store.__dict__.pop("_text_matches", None)
        started, started_cpu = time.perf_counter(), time.process_time()
        work()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - started_cpu)
    return statistics.median(walls), statistics.median(cpus)


def report(label: str, seconds: tuple[float, float]) -> None:
    print(f"{label:<44} {seconds[0] * 1000:>10.0f} {seconds[1] * 1000:>10.0f}")


def get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()


def time_pages(store_path: Path, repeats: int) -> None:
    """The whole page over HTTP, as a browser gets it (server-side rendering included)."""
    server = ReviewServer(open_review(store_path, None, "bench"), bind("127.0.0.1", 0)).start()
    try:
        report("HTTP first page, cold (facts built)", median_seconds(lambda: get(server.url), 1))
        for label, query in (
            ("HTTP first page", ""),
            ("HTTP view low_confidence", "?view=low_confidence"),
            ("HTTP view unreviewed", "?view=unreviewed"),
            ("HTTP view reviewers_differ", "?view=reviewers_differ"),
            ("HTTP search 'nurse'", "?q=nurse"),
            ("HTTP major group 29", "?major=29"),
            ("HTTP my queue, margin order", "?queue=1&sort=margin_asc"),
            ("HTTP audit sample only", "?sample=1"),
            ("HTTP page 1000", "?page=1000"),
        ):
            report(label, median_seconds(lambda q=query: get(server.url + q), repeats))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--run", default=None)
    parser.add_argument("--rows", type=int, default=100_000)
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
            store.db.execute("UPDATE runs SET rows_done = ? WHERE run_id = ?", [total, run_id])
            print(
                f"run {run_id}: {total:,} rows ({copies} copies of {source_rows}), 1 in 50 reviewed"
            )
            assign_queues(store, run_id, ["bench", "other"], overlap=0.1)
            draw_sample(store, run_id, 200, "confidence", seed=0)
            store.db.execute("DELETE FROM review_facts WHERE run_id = ?", [run_id])
            print(f"{'query':<44} {'wall ms':>10} {'cpu ms':>10}")
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
                    lambda f=review_filter: review_rows(store, run_id, f), arguments.repeats, store
                )
                report(label, seconds)
        time_pages(copy, arguments.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
