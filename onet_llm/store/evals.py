"""Evaluation results kept beside the call cache: per LLM mode, its top-1 against
embedding-only, so that `label` can warn about a model measured to do harm."""

from __future__ import annotations

import uuid
from typing import Any

from onet_llm.store.db import Database, now, transaction


class EvalTables(Database):
    def record_eval(self, rows: list[dict[str, Any]]) -> str:
        """Store one evaluation's LLM modes (keys as the `eval_results` columns)."""
        eval_id = uuid.uuid4().hex[:16]
        with self.cursor() as cursor, transaction(cursor):
            for row in rows:
                cursor.execute(
                    "INSERT INTO eval_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        eval_id,
                        row["llm_model"],
                        row["llm_stages"],
                        row["mode"],
                        row["data_name"],
                        row["rows"],
                        row["top1"],
                        row["embedding_top1"],
                        row.get("difference_low"),
                        row.get("difference_high"),
                        row.get("report"),
                        now(),
                    ],
                )
        return eval_id

    def eval_results(self, llm_model: str) -> list[dict[str, Any]]:
        """Every stored LLM-mode result of `llm_model`, newest first."""
        with self.cursor() as cursor:
            result = cursor.execute(
                "SELECT llm_stages, mode, data_name, rows, top1, embedding_top1, "
                "difference_low, difference_high, report, created_at FROM eval_results "
                "WHERE llm_model = ? ORDER BY created_at DESC",
                [llm_model],
            )
            names = [column[0] for column in result.description]
            return [dict(zip(names, values, strict=True)) for values in result.fetchall()]
