"""`ledger`, `runs`, `logs` and the review page work while a `label` run writes the same store:
two real processes, the writer holding the DuckDB file only while it commits a chunk
(issue 15, point 3)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.review.server import ReviewServer, bind, open_review
from onet_llm.store import Store

runner = CliRunner()


def start_label_run(postings: Path, output: Path, store: Path) -> subprocess.Popen:
    env = {**os.environ, "ONET_LLM_STORE": str(store)}
    return subprocess.Popen(
        [sys.executable, "-m", "onet_llm.cli", "label", str(postings), "-o", str(output),
         "--chunk-size", "20"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def rows_done(store: Path) -> int:
    with Store(store, read_only=True) as reader:
        runs = reader.runs()
    return int(runs["rows_done"].iloc[-1]) if len(runs) else 0


def test_readers_work_while_a_label_run_writes(example_postings: Path, tmp_path: Path):
    frame = pd.read_csv(example_postings, dtype=str, keep_default_na=False)
    postings = tmp_path / "many.csv"
    big = pd.concat([frame] * 15, ignore_index=True)  # 300 rows, 15 chunks
    big["id"] = [str(i) for i in range(len(big))]
    big.to_csv(postings, index=False)
    store = tmp_path / "shared.duckdb"
    writer = start_label_run(postings, tmp_path / "out.csv", store)
    try:
        deadline = time.monotonic() + 600
        while not (store.is_file() and rows_done(store) > 0):
            assert writer.poll() is None, writer.stderr.read()
            assert time.monotonic() < deadline, "the run committed nothing"
            time.sleep(0.5)
        seen_during_run = 0
        server = ReviewServer(open_review(store, None, "tester"), bind("127.0.0.1", 0)).start()
        try:
            while writer.poll() is None:
                for command in (["runs"], ["ledger"], ["logs"]):
                    result = runner.invoke(app, [*command, "--store", str(store)])
                    assert result.exit_code == 0, result.output
                with urllib.request.urlopen(server.url, timeout=60) as response:
                    assert response.status == 200
                if writer.poll() is None:
                    seen_during_run += 1
        finally:
            server.stop()
        assert writer.wait(timeout=600) == 0, writer.stderr.read()
    finally:
        if writer.poll() is None:
            writer.kill()
    assert seen_during_run >= 1  # at least one full round of readers while the run wrote
    runs = runner.invoke(app, ["runs", "--store", str(store)])
    assert "done" in runs.output and "300 rows" in runs.output
