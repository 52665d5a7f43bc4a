"""`label --engine ray --llm` with `--dry-run` and with `--llm-mode batch`, on a real local Ray
runtime (2 CPUs), the shipped model and the batch server on 127.0.0.1 (OpenAI's chat, files
and batches endpoints): the same estimate and the same labels as the local engine, the dry
run's embedding stage kept for the real run, and a rerun that asks nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.engine import ray_engine
from onet_llm.label import Labeler
from onet_llm.store import Store
from tests.engine.test_ray_engine import example_rows, local_ray  # noqa: F401 (a fixture)
from tests.rerank.batch_server import BatchServer
from tests.rerank.test_batch import batch_environment  # noqa: F401 (autouse: the batch env)

pytest.importorskip("ray")
runner = CliRunner()
CODES = [f"onet_code_{k}" for k in (1, 2)]


def label(*args: str):
    return runner.invoke(app, ["label", *args], catch_exceptions=False)


def postings(tmp_path: Path, copies: int) -> Path:
    """The example postings, every seventh one marked so the LLM reorders its shortlist (its
    labels then differ from the embedding ranking's)."""
    rows = example_rows(copies)
    rows.loc[::7, "title"] = rows.loc[::7, "title"] + " [[fault:second]]"
    path = tmp_path / "postings.csv"
    rows.to_csv(path, index=False)
    return path


def lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip()]


def no_encoding(*args, **kwargs):
    raise AssertionError("the embedding stage was run again on Ray")


def test_the_ray_dry_run_prices_as_the_local_one_and_the_real_run_starts_from_its_shortlists(
    local_ray,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    path = postings(tmp_path, 5)  # 100 rows
    local_store = str(tmp_path / "local.duckdb")
    with BatchServer() as server:
        llm = ["--llm", "--base-url", server.base_url, "--shortlist-size", "5", "--top-k", "2"]
        ray = ["--engine", "ray", "--shard-rows", "40", "-o", str(tmp_path / "ray.csv"),
               "--work-dir", str(tmp_path / "work")]  # fmt: skip
        local = ["-o", str(tmp_path / "local.csv"), "--store", local_store]
        local_dry = label(str(path), "--dry-run", *local, *llm)
        assert local_dry.exit_code == 0, local_dry.output
        ray_dry = label(str(path), "--dry-run", *ray, *llm)
        assert ray_dry.exit_code == 0, ray_dry.output
        assert server.http_requests == 0  # no LLM request, no batch
        assert not (tmp_path / "ray.csv").exists()
        assert len(list((tmp_path / "work").glob("*/plan.json"))) == 1  # the shards are kept
        estimate = [line for line in lines(local_dry.output) if "is kept: run" not in line]
        assert "requests to send: 100" in estimate and len(estimate) == 8
        assert [line for line in lines(ray_dry.output) if line in estimate] == estimate
        assert "the embedding stage is kept: run " in ray_dry.output
        with Store(Path(os.environ["ONET_LLM_STORE"])) as store:
            (embedded,) = store.runs().itertuples()
            assert (embedded.status, embedded.rows_done) == ("embedded", 100)
            assert store.finished_shards(embedded.run_id) == {0, 1, 2}

        monkeypatch.setattr(ray_engine, "shard_dataset", no_encoding)
        monkeypatch.setattr(Labeler, "label_chunk", no_encoding)  # the local dry run's rows
        plain = label(str(path), *ray, *llm[3:])  # no --llm: the kept stage's output, written
        assert plain.exit_code == 0, plain.output
        assert set(pd.read_csv(tmp_path / "ray.csv")["source"]) == {"embedding"}
        real = label(str(path), *ray, *llm)
        assert real.exit_code == 0, real.output
        assert server.routes["POST /chat/completions"] == 100
        assert not list((tmp_path / "work").glob("*/plan.json"))  # removed once labelled
        local_run = label(str(path), *local, *llm)
        assert local_run.exit_code == 0, local_run.output
        assert server.routes["POST /chat/completions"] == 200  # its own store: asked again
    with Store(Path(os.environ["ONET_LLM_STORE"])) as store:
        runs = store.runs()
        assert store.finished_shards(embedded.run_id) == {0, 1, 2}  # nothing encoded again
    # the kept embedding stage became the plain run; the LLM stage's run
    assert list(runs["status"]) == ["done", "done"] and list(runs["rows_done"]) == [100] * 2
    got, expected = (pd.read_csv(tmp_path / name) for name in ("ray.csv", "local.csv"))
    assert got[["id", *CODES, "source"]].equals(expected[["id", *CODES, "source"]])
    assert set(got["source"]) == {"llm"}
    reordered = got["title"].str.contains("fault:second")  # the LLM's own answer reached them
    assert reordered.sum() == 15 and set(got.loc[reordered, "rationale_1"]) == {"closest duties"}


def test_batch_mode_through_ray_gives_the_local_labels_and_a_rerun_asks_nothing(
    local_ray,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    path = postings(tmp_path, 2)  # 40 rows
    with BatchServer() as server:
        batch = ["--llm", "--base-url", server.base_url, "--llm-mode", "batch",
                 "--shortlist-size", "5", "--top-k", "2"]  # fmt: skip
        ray = ["--engine", "ray", "--shard-rows", "16", "-o", str(tmp_path / "ray.csv"),
               "--work-dir", str(tmp_path / "work")]  # fmt: skip
        first = label(str(path), *ray, *batch)
        assert first.exit_code == 0, first.output
        assert (server.uploads, server.creations) == (1, 1)
        assert server.routes["POST /chat/completions"] == 0  # every answer came by batch
        asked = server.http_requests

        with monkeypatch.context() as patched:
            patched.setattr(ray_engine, "shard_dataset", no_encoding)
            again = label(str(path), *ray, *batch)
        assert again.exit_code == 0, again.output
        assert server.http_requests == asked  # a rerun pays 0: every answer is in the cache

        local_store = str(tmp_path / "local.duckdb")
        local = label(str(path), "-o", str(tmp_path / "local.csv"), "--store", local_store, *batch)
        assert local.exit_code == 0, local.output
        assert (server.uploads, server.creations) == (2, 2)  # its own store: its own batch
    with Store(Path(os.environ["ONET_LLM_STORE"])) as store:
        calls = store.calls()
        runs = store.runs()
    assert set(calls["mode"]) == {"batch"} and set(calls["status"]) == {"ok"}
    # the embedding stage (kept, no output), the batch run and its rerun
    assert sorted(runs["status"]) == ["done", "done", "embedded"]
    columns = ["id", *CODES, "source", "rationale_1"]
    got, expected = (pd.read_csv(tmp_path / name) for name in ("ray.csv", "local.csv"))
    assert got[columns].equals(expected[columns])
    assert set(got["source"]) == {"llm"}


def test_a_killed_ray_batch_job_resumes_its_batch_and_loses_no_row(tmp_path: Path):
    """`--engine ray --llm-mode batch` killed (SIGKILL, driver and Ray runtime) while the batch
    is being created: the same command resumes the embedding stage's run and the recorded
    batch, uploads and pays for nothing twice, and commits every row once."""
    import signal
    import subprocess
    import sys

    path = postings(tmp_path, 2)  # 40 rows
    output = tmp_path / "ray.csv"
    with BatchServer(hang_at="create") as server:
        command = [sys.executable, "-m", "onet_llm.cli", "label", str(path), "--engine", "ray",
                   "--shard-rows", "16", "-o", str(output), "--work-dir", str(tmp_path / "work"),
                   "--llm", "--base-url", server.base_url, "--llm-mode", "batch",
                   "--shortlist-size", "5", "--top-k", "2"]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        try:
            reached = server.reached.wait(240)
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray runtime it started
            killed_output = process.communicate(timeout=30)[0].decode()[-2000:]
            server.release.set()
        assert reached, killed_output
        assert not output.exists() and server.uploads == 1
        again = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
        assert (server.uploads, server.creations) == (1, 1)  # no second upload or charge
        assert server.routes["POST /chat/completions"] == 0  # every answer came by batch
    with Store(Path(os.environ["ONET_LLM_STORE"])) as store:
        runs = store.runs()
        rows = store.db.execute("SELECT run_id, row_number FROM run_rows").df()
    assert sorted(runs["status"]) == ["done", "embedded"]  # each stage's run, resumed
    for run_id in runs["run_id"]:  # every row once in each run
        numbers = sorted(rows.loc[rows["run_id"] == run_id, "row_number"])
        assert numbers == list(range(1, 41))
    labels = pd.read_csv(output)
    assert len(labels) == 40 and set(labels["source"]) == {"llm"}
