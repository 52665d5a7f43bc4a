"""Stores for the review tests, filled by the real `label` command over real postings.

Besides 20 real postings the input carries two hostile ones (markup in the title, body and id)
and one empty row, so every store has an `error` row and text that must render as text.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from onet_llm.cli import app

REPO = Path(__file__).resolve().parents[2]
SCRIPT_TITLE = "<script>window.__pwned = 'script'</script>Registered Nurse"
IMAGE_BODY = (
    "<img src=x onerror=\"window.__pwned = 'img'\"> Care for patients on a busy ward; "
    '<b>bold</b> claims & "quotes".'
)
HOSTILE_ROWS = [
    {"id": "<i>x1</i>", "title": SCRIPT_TITLE, "body": IMAGE_BODY, "onet_code": ""},
    {
        "id": "x2",
        "title": 'Staff Accountant"><svg onload="window.__pwned=\'svg\'">',
        "body": "Reconcile ledgers. </textarea></details><script>window.__pwned='b'</script>",
        "onet_code": "",
    },
    {"id": "x3", "title": "", "body": "", "onet_code": ""},
]


def write_postings(folder: Path, real_postings: int = 20, copies: int = 1) -> Path:
    """Real postings from examples/ (all 20 by default, `copies` times with distinct ids)
    plus the hostile and empty rows."""
    postings = pd.read_csv(REPO / "examples" / "postings.csv", dtype=str, keep_default_na=False)
    real = postings[["id", "title", "body", "onet_code"]].head(real_postings)
    rows = [
        {**row, "id": row["id"] if copy == 0 else f"{row['id']}-{copy}"}
        for copy in range(copies)
        for row in real.to_dict("records")
    ] + HOSTILE_ROWS
    path = folder / "postings.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "title", "body", "onet_code"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def label_into_store(
    folder: Path, home: Path, *extra: str, real_postings: int = 20, copies: int = 1
) -> Path:
    """Run the real `onet-llm label` into a fresh store in `folder`; returns the store path."""
    postings = write_postings(folder, real_postings, copies)
    store = folder / "store.duckdb"
    result = CliRunner().invoke(
        app,
        [
            "label",
            str(postings),
            "-o",
            str(folder / "postings.labels.csv"),
            "--store",
            str(store),
            "--home",
            str(home),
            "--skip-bad-rows",
            *extra,
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return store


class RunningReview:
    """A real review server on 127.0.0.1 (a free port) over `store`, for one test module."""

    def __init__(
        self, store: Path, reviewer: str = "test-auditor", host: str = "127.0.0.1"
    ) -> None:
        from onet_llm.review.server import ReviewServer, bind, open_review

        self.context = open_review(store, None, reviewer)
        self.server = ReviewServer(self.context, bind(host, 0)).start()
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()
