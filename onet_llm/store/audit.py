"""The SQL of the auditor workflow: reviewer queues, audit samples, decision history, and the
decisions agreement and accuracy are computed from.

Queues and samples are written once per `review assign` / `review sample` and never edited; the
newest of each per run counts, so an earlier assignment stays on record. `review.queues`,
`review.sampling` and `review.agreement` turn these records into figures.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from onet_llm.store.db import now
from onet_llm.store.reviews import EFFECTIVE_SQL, ReviewTables

_LATEST_QUEUE = "assignment_id = (SELECT max(assignment_id) FROM review_queues WHERE run_id = $run)"
_LATEST_SAMPLE = "sample_id = (SELECT max(sample_id) FROM review_samples WHERE run_id = $run)"


class AuditTables(ReviewTables):
    def run_row_facts(self, run_id: str) -> pd.DataFrame:
        """row_number, posting_id, source, label_code, embedding_code, confidence, margin of
        every row:
        what queues and samples are drawn from."""
        self.refresh_review_facts(run_id)
        return self.db.execute(
            "SELECT r.row_number, r.posting_id, r.source, f.label_code, f.embedding_code, "
            "f.confidence, f.margin FROM run_rows r JOIN review_facts f USING (run_id, row_number) "
            "WHERE r.run_id = $run ORDER BY r.row_number",
            {"run": run_id},
        ).df()

    def save_queues(self, run_id: str, rows: list[tuple[str, int, int, bool]]) -> int:
        """Record one assignment: (reviewer, row_number, position, overlap) rows; its id."""
        with self.transaction() as db:
            (assignment_id,) = db.execute("SELECT nextval('review_assignment_ids')").fetchall()[0]
            frame = pd.DataFrame(rows, columns=["reviewer", "row_number", "position", "overlap"])
            frame.insert(0, "run_id", run_id)
            frame.insert(0, "assignment_id", int(assignment_id))
            frame["assigned_at"] = now()
            db.register("queue_rows", frame)
            db.execute("INSERT INTO review_queues SELECT * FROM queue_rows")
            db.unregister("queue_rows")
        return int(assignment_id)

    def queue_progress(self, run_id: str) -> list[tuple[str, int, int, int]]:
        """(reviewer, rows assigned, rows decided by them, overlap rows) for the newest
        assignment, by reviewer name."""
        return self.db.execute(
            "WITH "
            + EFFECTIVE_SQL
            + f"""
            SELECT q.reviewer, count(*) AS assigned,
                   count(*) FILTER (WHERE EXISTS (
                       SELECT 1 FROM per_reviewer p
                       WHERE p.row_number = q.row_number AND p.reviewer = q.reviewer)) AS decided,
                   count(*) FILTER (WHERE q.overlap) AS overlap
            FROM review_queues q WHERE q.run_id = $run AND {_LATEST_QUEUE}
            GROUP BY q.reviewer ORDER BY q.reviewer
            """,
            {"run": run_id},
        ).fetchall()

    def overlap_labels(self, run_id: str) -> pd.DataFrame:
        """row_number, reviewer, onet_code: each assigned reviewer's label in force on the rows
        of the newest assignment that two reviewers share (reviews only, not adjudications)."""
        return self.db.execute(
            "WITH "
            + EFFECTIVE_SQL
            + f"""
            SELECT q.row_number, q.reviewer, p.onet_code
            FROM review_queues q
            JOIN per_reviewer p ON p.row_number = q.row_number AND p.reviewer = q.reviewer
            WHERE q.run_id = $run AND {_LATEST_QUEUE} AND q.overlap
              AND p.action IN ('accept', 'override') AND p.role = 'review'
            ORDER BY q.row_number, q.reviewer
            """,
            {"run": run_id},
        ).df()

    def save_sample(self, run_id: str, frame: pd.DataFrame, stratify: str, seed: int) -> int:
        """Record one audit sample (row_number, stratum, stratum_rows, stratum_sample); its id."""
        with self.transaction() as db:
            (sample_id,) = db.execute("SELECT nextval('review_sample_ids')").fetchall()[0]
            rows = frame[["row_number", "stratum", "stratum_rows", "stratum_sample"]].copy()
            rows.insert(0, "run_id", run_id)
            rows.insert(0, "sample_id", int(sample_id))
            rows.insert(3, "stratify", stratify)
            rows["seed"] = seed
            rows["drawn_at"] = now()
            db.register("sample_rows", rows)
            db.execute(
                "INSERT INTO review_samples SELECT sample_id, run_id, row_number, stratify, "
                "stratum, stratum_rows, stratum_sample, seed, drawn_at FROM sample_rows"
            )
            db.unregister("sample_rows")
        return int(sample_id)

    def sample_outcomes(self, run_id: str) -> pd.DataFrame:
        """The newest sample's rows with the run's top-1 label, the row's source and the label
        in force after review (the newest accept/override by anyone; NULL: not reviewed)."""
        return self.db.execute(
            "WITH "
            + EFFECTIVE_SQL
            + f""",
            gold AS (
                SELECT row_number, onet_code FROM effective
                WHERE action IN ('accept', 'override')
                QUALIFY row_number() OVER (PARTITION BY row_number ORDER BY decision_id DESC) = 1
            )
            SELECT s.row_number, s.stratify, s.stratum, s.stratum_rows, s.stratum_sample, s.seed,
                   r.source, f.label_code, g.onet_code AS reviewed_code
            FROM review_samples s
            JOIN run_rows r ON r.run_id = s.run_id AND r.row_number = s.row_number
            JOIN review_facts f ON f.run_id = s.run_id AND f.row_number = s.row_number
            LEFT JOIN gold g ON g.row_number = s.row_number
            WHERE s.run_id = $run AND {_LATEST_SAMPLE}
            ORDER BY s.row_number
            """,
            {"run": run_id},
        ).df()

    def decision_history(self, run_id: str, row_numbers: list[int]) -> list[dict[str, Any]]:
        """Every decision on these rows, undone ones and undos included, oldest first."""
        if not row_numbers:
            return []
        return (
            self.db.execute(
                "SELECT d.decision_id, d.row_number, d.action, d.onet_code, d.reviewer, d.note, "
                "d.role, d.undoes, d.decided_at, "
                "EXISTS (SELECT 1 FROM review_decisions u WHERE u.run_id = d.run_id "
                "AND u.action = 'undo' AND u.undoes = d.decision_id) AS undone "
                "FROM review_decisions d WHERE d.run_id = $run "
                "AND d.row_number IN (SELECT unnest($rows)) ORDER BY d.decision_id",
                {"run": run_id, "rows": row_numbers},
            )
            .df()
            .to_dict("records")
        )

    def last_decision_in_force(self, run_id: str, row_number: int, reviewer: str) -> int | None:
        """The id of `reviewer`'s newest decision on the row that is still in force."""
        row = self.db.execute(
            "WITH "
            + EFFECTIVE_SQL
            + " SELECT max(decision_id) FROM effective WHERE row_number = $row "
            "AND reviewer = $reviewer",
            {"run": run_id, "row": row_number, "reviewer": reviewer},
        ).fetchone()
        return None if row[0] is None else int(row[0])
