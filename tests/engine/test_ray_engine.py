"""`label --engine ray` on a real local Ray runtime (2 CPUs) with the shipped model: the same
labels as the local engine, a killed job that resumes without loss or duplicates, and the same
one-line error for a bad row. The shard split is tested without Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.engine.ray_engine import RayOptions, plan_job
from onet_llm.engine.shards import (
    JOB_LOCK,
    hold_work_folder,
    input_files,
    load_plan,
    release_work_folder,
    split_into_shards,
    stale_work_folders,
    work_folder_in_use,
)
from onet_llm.errors import InputError
from onet_llm.postings import LabelOptions
from tests.conftest import REPO

pytest.importorskip("ray")
runner = CliRunner()


def example_rows(copies: int) -> pd.DataFrame:
    """The example postings repeated with unique ids and numbered titles (a few hundred rows)."""
    examples = pd.read_csv(REPO / "examples" / "postings.csv", dtype=str)
    frames = []
    for copy in range(copies):
        frame = examples.copy()
        frame["id"] = [f"{posting_id}-{copy}" for posting_id in frame["id"]]
        if copy:
            frame["title"] = frame["title"] + f" {copy}"
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def local_ray():
    """One real local Ray runtime for the in-process tests of this module."""
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def label(*args: str):
    return runner.invoke(app, ["label", *args], catch_exceptions=False)


# -- the shard split (no Ray) -------------------------------------------------------------------


def test_the_split_checks_rows_numbers_them_across_files_and_is_reused(tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    rows = example_rows(2)
    rows.iloc[:25].to_csv(folder / "a.csv", index=False)
    rows.iloc[25:].to_json(folder / "b.jsonl", orient="records", lines=True)
    (folder / "notes.txt").write_text("not a table")
    files = input_files(str(folder))
    assert [f.name for f in files] == ["a.csv", "b.jsonl"]
    options = LabelOptions(keep_columns=("body",))
    plan = split_into_shards(files, tmp_path / "work", options, shard_rows=16)
    assert [(s.first_row, s.rows) for s in plan.shards] == [(1, 16), (17, 16), (33, 8)]
    assert plan.total_rows == 40
    shard = pd.read_parquet(plan.shards[1].path)
    assert shard["row_number"].tolist() == list(range(17, 33))
    assert shard["posting_id"].tolist() == rows["id"].iloc[16:32].tolist()  # across the files
    assert json.loads(shard["kept"].iloc[0]) == {"body": rows["body"].iloc[16]}
    assert load_plan(tmp_path / "work") == plan
    os.remove(folder / "a.csv")  # a resumed run does not read the input again
    assert split_into_shards(files, tmp_path / "work", options, shard_rows=16) == plan


def test_a_bad_row_or_a_duplicate_id_in_the_second_file_names_the_file(tmp_path: Path):
    rows = example_rows(1)
    rows.iloc[:10].to_csv(tmp_path / "a.csv", index=False)
    bad = rows.iloc[10:].copy()
    bad.loc[bad.index[3], ["title", "body"]] = ""
    bad.to_csv(tmp_path / "b.csv", index=False)
    files = input_files(str(tmp_path / "*.csv"))
    with pytest.raises(InputError) as error:
        split_into_shards(files, tmp_path / "work", LabelOptions(), shard_rows=8)
    assert str(error.value).startswith(f"{tmp_path / 'b.csv'}: row 14 (id ")
    assert "title and body are both empty" in str(error.value)
    assert load_plan(tmp_path / "work") is None  # no half plan to resume from
    rows.iloc[:3].to_csv(tmp_path / "b.csv", index=False)  # ids of a.csv again
    with pytest.raises(InputError, match="b.csv: row 11: id .* is already used by row 1"):
        split_into_shards(files, tmp_path / "work", LabelOptions(), shard_rows=8)


def test_work_folders_of_jobs_whose_input_changed_are_removed_when_a_job_is_planned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A job whose input changed can never resume (its key holds each file's size and mtime):
    its shards go when the next job is planned. Other jobs' folders stay, and so do a split
    that never finished and a plan whose input is only named relative to another folder."""
    rows = example_rows(1)
    (tmp_path / "in").mkdir()
    changed, unchanged, deleted = (tmp_path / "in" / f"{n}.csv" for n in ("a", "b", "c"))
    for path in (changed, unchanged, deleted):
        rows.iloc[:12].to_csv(path, index=False)
    root = tmp_path / "work"
    monkeypatch.chdir(tmp_path / "in")  # plans name their inputs as given: relative here
    for path in (changed, unchanged, deleted):
        split_into_shards(input_files(path.name), root / path.stem, LabelOptions(), 8)
    (root / "unfinished").mkdir()
    (root / "unfinished" / "shard-00000.parquet").write_bytes(b"")
    monkeypatch.chdir(tmp_path)  # another folder: relative names no longer resolve here
    assert stale_work_folders(root, keep=root / "a") == []
    rows.iloc[:13].to_csv(changed, index=False)
    deleted.unlink()
    assert stale_work_folders(root, keep=root / "b") == [root / "a", root / "c"]

    job = plan_job(
        str(unchanged), None, LabelOptions(), {}, "index", RayOptions(work_dir=root), tmp_path
    )
    assert job.removed_stale == 2
    assert sorted(p.name for p in root.iterdir()) == sorted(["b", "unfinished", job.work.name])
    assert job.plan.total_rows == 12 and load_plan(job.work) == job.plan


def test_a_work_folder_a_running_job_holds_is_never_removed_as_stale(tmp_path: Path):
    """A job holds its work folder's lock while it runs: planning elsewhere (another process,
    another store) leaves it alone even when its input changed, and the same job started twice
    at once is refused in one line."""
    rows = example_rows(1)
    source = tmp_path / "a.csv"
    rows.iloc[:12].to_csv(source, index=False)
    root = tmp_path / "work"
    split_into_shards(input_files(str(source)), root / "a", LabelOptions(), 8)
    rows.iloc[:13].to_csv(source, index=False)  # the input changed: "a" can never resume
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
         str(root / "a" / JOB_LOCK)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert work_folder_in_use(root / "a")
        assert stale_work_folders(root, keep=root / "b") == []  # running: kept
        with pytest.raises(InputError, match="another process is running this job"):
            hold_work_folder(root / "a")
    finally:
        holder.kill()
        holder.wait()
    assert stale_work_folders(root, keep=root / "b") == [root / "a"]  # its job is gone
    hold_work_folder(root / "a")  # this process's own job
    try:
        assert stale_work_folders(root, keep=root / "b") == []
    finally:
        release_work_folder(root / "a")
    assert not work_folder_in_use(root / "a")


def test_inputs_that_hold_nothing_to_label_are_refused(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no CSV, TSV, Parquet or JSONL file"):
        input_files(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="matches no CSV"):
        input_files(str(tmp_path / "*.parquet"))
    with pytest.raises(InputError, match="no such file or folder"):
        input_files(str(tmp_path / "missing.csv"))


# -- real Ray -----------------------------------------------------------------------------------


def test_ray_gives_the_local_engines_labels_in_parts_and_in_one_file(local_ray, tmp_path: Path):
    postings = tmp_path / "postings.csv"
    example_rows(15).to_csv(postings, index=False)  # 300 rows
    local = label(str(postings), "-o", str(tmp_path / "local.csv"), "--keep-columns", "body")
    assert local.exit_code == 0, local.output
    parts = tmp_path / "ray-parts"
    result = label(str(postings), "--engine", "ray", "-o", str(parts), "--shard-rows", "64",
                   "--keep-columns", "body")  # fmt: skip
    assert result.exit_code == 0, result.output
    single = label(str(postings), "--engine", "ray", "-o", str(tmp_path / "ray.csv"),
                   "--keep-columns", "body")  # fmt: skip
    assert single.exit_code == 0, single.output

    expected = pd.read_csv(tmp_path / "local.csv", dtype=str)
    manifest = json.loads((parts / "manifest.json").read_text())
    assert [part["rows"] for part in manifest["parts"]] == [64, 64, 64, 64, 44]
    from_parts = pd.concat(
        [pd.read_parquet(parts / part["file"]) for part in manifest["parts"]], ignore_index=True
    )
    for got in (from_parts, pd.read_csv(tmp_path / "ray.csv", dtype=str)):
        assert list(got.columns) == list(expected.columns)
        assert got["id"].astype(str).tolist() == expected["id"].tolist()
        assert got["body"].astype(str).tolist() == expected["body"].tolist()
        for k in range(1, 6):
            assert got[f"onet_code_{k}"].tolist() == expected[f"onet_code_{k}"].tolist()
            np.testing.assert_allclose(
                got[f"score_{k}"].astype(float), expected[f"score_{k}"].astype(float), atol=1e-4
            )
    assert not any((Path(os.environ["ONET_LLM_HOME"]) / "ray").glob("*/plan.json"))  # cleaned


def test_a_bad_row_gives_the_local_engines_one_line_error(local_ray, tmp_path: Path):
    rows = example_rows(1)
    rows.loc[5, ["title", "body"]] = ""
    postings = tmp_path / "postings.csv"
    rows.to_csv(postings, index=False)
    errors = []
    for engine in ("local", "ray"):
        result = runner.invoke(app, ["label", str(postings), "--engine", engine])
        assert result.exit_code == 1, result.output
        errors.append(result.output.strip())
    assert errors[0] == errors[1]
    assert errors[0].startswith("error: row 6 (id ") and "\n" not in errors[0]


def test_a_killed_job_resumes_without_losing_or_repeating_a_row(tmp_path: Path):
    postings = tmp_path / "postings.csv"
    rows = example_rows(60)  # 1,200 rows in 24 shards
    rows.to_csv(postings, index=False)
    store = tmp_path / "killed.duckdb"
    output = tmp_path / "labels"
    command = [sys.executable, "-m", "onet_llm.cli", "label", str(postings), "--engine", "ray",
               "-o", str(output), "--shard-rows", "50", "--store", str(store)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 240
    committed = 0
    while committed < 2 and time.monotonic() < deadline and process.poll() is None:
        committed = committed_shards(store)
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray runtime it started
    process.wait(timeout=30)
    assert 2 <= committed < 24, process.stderr.read().decode()[-2000:]
    assert not (output / "manifest.json").exists()

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed after row" in again.stdout
    with duckdb.connect(str(store), read_only=True) as db:
        numbers = [r[0] for r in db.execute("SELECT row_number FROM run_rows").fetchall()]
        shards = db.execute("SELECT count(*) FROM run_shards").fetchone()[0]
    assert sorted(numbers) == list(range(1, 1201)) and shards == 24  # no loss, no duplicate
    labels = pd.concat([pd.read_parquet(p) for p in sorted(output.glob("part-*.parquet"))])
    assert labels["id"].tolist() == rows["id"].tolist()


def committed_shards(store: Path) -> int:
    """Shards committed so far by the running job (its store is free between commits)."""
    if not store.exists():
        return 0
    try:
        with duckdb.connect(str(store), read_only=True) as db:
            return db.execute("SELECT count(*) FROM run_shards").fetchone()[0]
    except duckdb.Error:
        return 0


def test_the_llm_stage_runs_on_the_driver_and_a_rerun_pays_nothing(
    local_ray, tmp_path: Path, monkeypatch
):
    from tests.rerank.fault_server import FaultServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-ray")
    postings = tmp_path / "postings.csv"
    example_rows(2).to_csv(postings, index=False)  # 40 rows
    with FaultServer() as server:
        llm = ["--llm", "--base-url", server.base_url, "--llm-model", "fault-model",
               "--shortlist-size", "5", "--top-k", "2", "--shard-rows", "16"]  # fmt: skip
        first = label(str(postings), "--engine", "ray", "-o", str(tmp_path / "a.csv"), *llm)
        assert first.exit_code == 0, first.output
        assert server.total_requests == 40
        again = label(str(postings), "--engine", "ray", "-o", str(tmp_path / "b.csv"), *llm)
        assert again.exit_code == 0, again.output
        assert server.total_requests == 40  # every answer came from the driver's cache
    for name in ("a.csv", "b.csv"):
        labels = pd.read_csv(tmp_path / name)
        assert set(labels["source"]) == {"llm"} and labels["rationale_1"].notna().all()
