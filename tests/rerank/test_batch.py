"""`label --llm --llm-mode batch`, `--dry-run` and the cost ledger, against a real HTTP server
on 127.0.0.1 with OpenAI's files and batches endpoints (tests/rerank/batch_server.py), the real
openai client, the shipped model and a real DuckDB store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.rerank.cost import DEFAULT_PRICES, Price, Prices
from onet_llm.settings import ENVIRONMENT_VARIABLES, Settings
from onet_llm.store import Store
from tests.rerank.batch_server import BatchServer, wordpiece_counter

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-test-DO-NOT-STORE-4242"
runner = CliRunner()
TITLES = {
    "ok1": "Registered Nurse",
    "ok2": "Truck Driver, long haul",
    "ok3": "Accountant",
    "ok4": "Software Developer, backend services",
    "malformed": "Line Cook [[fault:malformed]]",  # invalid in the batch, good in sync
    "offlist": "Welder [[fault:offlist]]",  # invalid in the batch and in sync: fallback
    "error500": "Electrician [[fault:error500]]",  # a 500 line in the batch, good in sync
    "always500": "Plumber [[fault:always500]]",  # a 500 line, then 500s in sync: fallback
}


@pytest.fixture(autouse=True)
def batch_environment(monkeypatch: pytest.MonkeyPatch):
    for variable in ENVIRONMENT_VARIABLES.values():
        if variable not in {"ONET_LLM_HOME", "ONET_LLM_STORE"}:
            monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ONET_LLM_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("ONET_LLM_BATCH_POLL", "0.01")
    monkeypatch.setenv("ONET_LLM_BACKOFF_INITIAL", "0.01")
    monkeypatch.setenv("ONET_LLM_BACKOFF_MAX", "0.02")
    monkeypatch.setenv("ONET_LLM_MAX_RETRIES", "1")
    monkeypatch.setenv("ONET_LLM_FAIL_FAST_AFTER", "0")


def postings(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "postings.csv"
    body = "Duties as described in the title; full time, day shifts, benefits."
    pd.DataFrame(
        {"id": names, "title": [TITLES[n] for n in names], "body": [body] * len(names)}
    ).to_csv(path, index=False)
    return path


def label(server: BatchServer, path: Path, *extra: str):
    args = ["label", str(path), "-o", str(path.with_suffix(".labels.csv")), "--llm"]
    args += ["--base-url", server.base_url, "--llm-mode", "batch", *extra]
    return runner.invoke(app, args, catch_exceptions=False)


def output(path: Path) -> pd.DataFrame:
    return pd.read_csv(path.with_suffix(".labels.csv"), dtype=str, keep_default_na=False)


def test_a_batch_run_end_to_end_and_a_rerun_makes_no_request(tmp_path: Path):
    path = postings(tmp_path, ["ok1", "ok2", "ok3"])
    with BatchServer() as server:
        result = label(server, path)
        assert result.exit_code == 0, result.output
        assert (server.uploads, server.creations) == (1, 1)
        assert server.routes["POST /chat/completions"] == 0  # every answer came by batch
        labels = output(path)
        assert list(labels["source"]) == ["llm"] * 3 and set(labels["error"]) == {""}
        with Store(Path(os.environ["ONET_LLM_STORE"])) as store:
            calls = store.calls()
            (batch,) = store.batches()
        assert list(calls["mode"]) == ["batch"] * 3 and set(calls["status"]) == {"ok"}
        # 1000 prompt + 100 completion tokens a line, at half of gpt-4o-mini's sync price
        assert calls["cost_usd"].tolist() == pytest.approx([(150 + 60) / 1e6 / 2] * 3)
        assert batch["status"] == "processed" and batch["answered"] == 3
        listed = runner.invoke(app, ["batches"], catch_exceptions=False)
        assert "processed, 3 requests, 3 done, 0 failed, 3 answered" in listed.output
        assert SECRET not in Path(os.environ["ONET_LLM_STORE"]).read_bytes().decode("latin-1")

        before = server.http_requests
        again = label(server, path)
        assert again.exit_code == 0, again.output
        assert server.http_requests == before  # everything is answered: nothing is asked
        assert list(output(path)["source"]) == ["llm"] * 3


def test_errored_and_invalid_lines_are_retried_in_sync_then_fall_back(tmp_path: Path):
    names = ["ok1", "malformed", "offlist", "error500", "always500"]
    path = postings(tmp_path, names)
    with BatchServer() as server:
        result = label(server, path)
        assert result.exit_code == 0, result.output
        assert (server.uploads, server.creations) == (1, 1)
        labels = output(path).set_index("id")
        assert labels.loc["ok1", "source"] == "llm"
        assert labels.loc["malformed", "source"] == "llm"  # the sync retry's answer
        assert labels.loc["error500", "source"] == "llm"
        offlist, failing = labels.loc["offlist", "error"], labels.loc["always500", "error"]
        assert labels.loc["offlist", "source"] == "fallback"
        assert offlist.startswith("batch: invalid answer: choice number 99 is not on the list")
        assert "; sync retry: invalid answer" in offlist
        assert labels.loc["always500", "source"] == "fallback"
        assert failing.startswith("batch: batch request failed: HTTP 500")
        assert "; sync retry: LLM request failed: HTTP 500" in failing
        # the sync path asked each failed line once (plus its own retries), never in a batch
        assert server.requests["malformed"] == 2 and server.requests["error500"] == 2
        assert server.requests["offlist"] == 1 + 3 and server.requests["always500"] == 1 + 2
        with Store(Path(os.environ["ONET_LLM_STORE"])) as store:
            log = store.call_log()
        paid = log[~log["cached"]].groupby("mode").size().to_dict()
        # 3 batch replies were paid for (the 500 lines were not), 4 calls went in sync, and
        # the batch's good answer reached its row as a cache hit
        assert paid == {"batch": 3, "sync": 4} and int(log["cached"].sum()) == 1


def test_an_expired_batch_keeps_its_answers_and_asks_the_rest_in_sync(tmp_path: Path):
    path = postings(tmp_path, ["ok1", "ok2", "ok3"])
    with BatchServer(expire=True, expire_answered=1) as server:
        result = label(server, path)
        assert result.exit_code == 0, result.output
        assert list(output(path)["source"]) == ["llm"] * 3
        assert server.routes["POST /chat/completions"] == 2
        with Store(Path(os.environ["ONET_LLM_STORE"])) as store:
            (batch,) = store.batches()
            errors = set(store.batch_errors(batch["run_id"]).values())
        assert batch["answered"] == 1
        assert errors == {"batch request failed: batch_expired: This request expired"}


def test_requests_are_split_over_the_batch_limits(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ONET_LLM_BATCH_MAX_REQUESTS", "2")
    path = postings(tmp_path, ["ok1", "ok2", "ok3", "malformed", "error500"])
    with BatchServer() as server:
        assert label(server, path).exit_code == 0
        assert (server.uploads, server.creations) == (3, 3)
        sizes = sorted(b["request_counts"]["total"] for b in server.batches.values())
        assert sizes == [1, 2, 2]
    monkeypatch.setenv("ONET_LLM_BATCH_MAX_REQUESTS", "50000")
    monkeypatch.setenv("ONET_LLM_BATCH_MAX_BYTES", "9000")  # one ~5 kB line per file
    with BatchServer() as server:
        label(server, postings(tmp_path, ["ok1", "ok2", "ok3"]), "--top-k", "3")
        assert (server.uploads, server.creations) == (3, 3)


def killed_at(server: BatchServer, path: Path, tmp_path: Path) -> None:
    """Run the batch label command in a process of its own and kill it (SIGKILL) when the
    server holds the request of its `hang_at` stage."""
    command = [sys.executable, "-c", "from onet_llm.cli import app; app()"]
    command += ["label", str(path), "-o", str(path.with_suffix(".labels.csv")), "--llm"]
    command += ["--base-url", server.base_url, "--llm-mode", "batch"]
    log = (tmp_path / "killed.log").open("w")
    process = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=log, env=dict(os.environ))
    try:
        assert server.reached.wait(120), (tmp_path / "killed.log").read_text()
    finally:
        process.kill()
        process.wait()
        server.release.set()


@pytest.mark.parametrize("stage", ["list_files", "upload", "create", "retrieve", "content"])
def test_a_run_killed_at_any_stage_resumes_the_same_batch(tmp_path: Path, stage: str):
    path = postings(tmp_path, ["ok1", "ok2", "offlist"])
    with BatchServer(hang_at=stage) as server:
        killed_at(server, path, tmp_path)
        assert not path.with_suffix(".labels.csv").exists()
        result = label(server, path)
        assert result.exit_code == 0, result.output
        assert (server.uploads, server.creations) == (1, 1)  # no second upload, no second charge
        labels = output(path)
        assert list(labels["source"]) == ["llm", "llm", "fallback"]
        with Store(Path(os.environ["ONET_LLM_STORE"])) as store:
            assert len(store.batches()) == 1  # one run of each stage, each resumed:
            assert sorted(store.runs()["status"]) == ["done", "embedded"]
            batch_calls = store.call_log().query("mode == 'batch'")
        assert len(batch_calls) == 3  # each line's reply is counted once


def test_a_cancelled_batch_is_answered_in_sync_on_the_next_run(tmp_path: Path):
    path = postings(tmp_path, ["ok1", "ok2"])
    with BatchServer(hang_at="retrieve") as server:
        killed_at(server, path, tmp_path)
        (batch_id,) = server.batches
        cancelled = runner.invoke(
            app, ["batches", "--cancel", batch_id, "--base-url", server.base_url]
        )
        assert cancelled.exit_code == 0 and "cancelling" in cancelled.output
        assert label(server, path).exit_code == 0
        assert server.batches[batch_id]["status"] == "cancelled"
        assert list(output(path)["source"]) == ["llm", "llm"]
        assert server.routes["POST /chat/completions"] == 2 and server.creations == 1
        listed = runner.invoke(app, ["batches"], catch_exceptions=False).output
        assert f"{batch_id} key" in listed and "processed, 2 requests" in listed


def test_the_dry_run_calls_nothing_and_estimates_the_tokens_within_ten_percent(tmp_path: Path):
    path = postings(tmp_path, ["ok1", "ok2", "ok3", "ok4"])
    with BatchServer(count_tokens=wordpiece_counter()) as server:
        dry = runner.invoke(
            app,
            ["label", str(path), "--llm", "--dry-run", "--base-url", server.base_url],
            catch_exceptions=False,
        )
        assert dry.exit_code == 0, dry.output
        assert server.http_requests == 0 and not path.with_suffix(".labels.csv").exists()
        figures = dry.output.replace(",", "")
        assert "requests to send: 4" in figures and "cache hits: 0" in figures
        sync_per_1000 = float(figures.split("sync: $")[1].split("($")[1].split(" ")[0])
        batch_per_1000 = float(figures.split("batch): $")[1].split("($")[1].split(" ")[0])
        assert batch_per_1000 == pytest.approx(sync_per_1000 / 2, abs=0.0001)
        estimated = int(figures.split("estimated tokens: ")[1].split(" in")[0])
        # the same requests, sent: the server counts their prompt tokens with a real tokenizer
        sent = label(server, path)
        assert sent.exit_code == 0, sent.output
        counted = server.prompt_tokens_counted
        assert abs(estimated - counted) / counted < 0.10, (estimated, counted)
        again = runner.invoke(app, ["label", str(path), "--llm", "--dry-run"])
        assert "cache hits: 4" in again.output and "requests to send: 0" in again.output


def test_the_dry_run_keeps_its_embedding_stage_and_no_later_run_encodes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The dry run encodes every row once into a run of status `embedded` (no output); the
    same command without --llm, with --llm and in batch mode all start from its shortlists."""
    from onet_llm.label import Labeler

    path = postings(tmp_path, ["ok1", "ok2", "ok3", "ok4"])
    fresh_store = str(tmp_path / "fresh.duckdb")
    fresh = runner.invoke(app, ["label", str(path), "-o", str(tmp_path / "fresh.csv"),
                                "--store", fresh_store], catch_exceptions=False)  # fmt: skip
    assert fresh.exit_code == 0, fresh.output
    with BatchServer() as server:
        llm = ["--llm", "--base-url", server.base_url]
        dry = runner.invoke(app, ["label", str(path), "--dry-run", *llm], catch_exceptions=False)
        assert dry.exit_code == 0, dry.output
        assert "the embedding stage is kept: run " in dry.output and server.http_requests == 0
        with Store(Path(os.environ["ONET_LLM_STORE"])) as store:
            (embedded,) = store.runs().itertuples()
        assert (embedded.status, embedded.rows_done) == ("embedded", 4)
        assert not path.with_suffix(".labels.csv").exists()

        def no_encoding(*args, **kwargs):
            raise AssertionError("a row was encoded again")

        monkeypatch.setattr(Labeler, "label_chunk", no_encoding)
        plain = runner.invoke(app, ["label", str(path)], catch_exceptions=False)
        assert plain.exit_code == 0, plain.output
        codes = ["id", "onet_code_1", "onet_code_2", "onet_code_3", "score_1", "source"]
        fresh_labels = pd.read_csv(tmp_path / "fresh.csv")[codes]
        assert pd.read_csv(path.with_suffix(".labels.csv"))[codes].equals(fresh_labels)
        synced = runner.invoke(app, ["label", str(path), *llm], catch_exceptions=False)
        assert synced.exit_code == 0, synced.output
        assert server.routes["POST /chat/completions"] == 4
        assert list(output(path)["source"]) == ["llm"] * 4
        batched = label(server, path)  # every answer is cached: no batch, no request
        assert batched.exit_code == 0, batched.output
        assert server.routes["POST /chat/completions"] == 4 and server.creations == 0
    with Store(Path(os.environ["ONET_LLM_STORE"])) as store:
        runs = store.runs().set_index("run_id")
    # the embedding stage became the plain run (its output written); one run per LLM mode
    assert runs.loc[embedded.run_id, "status"] == "done" and len(runs) == 3


def test_cached_tokens_are_recorded_and_priced_at_the_cached_rate(tmp_path: Path):
    path = postings(tmp_path, ["ok1"])
    with BatchServer() as server:
        server.cached_tokens = 600
        result = runner.invoke(app, ["label", str(path), "--llm", "--base-url", server.base_url])
        assert result.exit_code == 0, result.output
    with Store(Path(os.environ["ONET_LLM_STORE"])) as store:
        ledger = store.ledger()
        call = store.calls().iloc[0]
    assert int(ledger.loc[0, "cached_tokens"]) == 600 and call["mode"] == "sync"
    assert call["cost_usd"] == pytest.approx((400 * 0.15 + 600 * 0.075 + 100 * 0.60) / 1e6)
    assert "1000 in (600 cached)" in runner.invoke(app, ["ledger"]).output


def test_one_price_table_with_cached_and_batch_rates_overridable_by_file(tmp_path: Path):
    assert DEFAULT_PRICES["gpt-4.1-mini"] == Price(0.40, 1.60, cached_input=0.10)
    prices = Prices(Settings())
    assert prices.cost("gpt-4o-mini", 1000, 100, batch=True) == pytest.approx((150 + 60) / 1e6 / 2)
    file = tmp_path / "prices.json"
    file.write_text(
        json.dumps({"local": [1.0, 2.0], "gpt-4o-mini": {"input": 1, "output": 4, "batch": 0.4}})
    )
    overridden = Prices(Settings(prices_file=file))
    assert overridden.cost("local", 1_000_000, 0) == pytest.approx(1.0)
    assert overridden.cost("gpt-4o-mini", 1_000_000, 1_000_000, batch=True) == pytest.approx(2.0)
    assert "overridden by" in overridden.checked
    file.write_text(json.dumps({"bad": [1]}))
    with pytest.raises(Exception, match="cannot read prices"):
        Prices(Settings(prices_file=file))


def test_modes_that_cannot_be_planned_say_so_in_one_line(tmp_path: Path):
    path = postings(tmp_path, ["ok1"])
    with BatchServer() as server:
        batch = label(server, path, "--llm-stages", "infer,rerank")
        dry = runner.invoke(app, ["label", str(path), "--dry-run"])
        assert server.http_requests == 0
    assert (
        batch.exit_code == 1 and "--llm-mode batch works with --llm-stages rerank" in batch.output
    )
    assert dry.exit_code == 1 and "--dry-run estimates the LLM stage: add --llm" in dry.output


def test_the_batch_limit_of_the_cost_meter_stops_before_creating(tmp_path: Path):
    path = postings(tmp_path, ["ok1", "ok2"])
    with BatchServer() as server:
        stopped = label(server, path, "--max-cost-usd", "0.0001")
        assert stopped.exit_code == 1 and "--max-cost-usd" in stopped.output
        assert (server.uploads, server.creations) == (1, 0)
        resumed = label(server, path, "--max-cost-usd", "1")
        assert resumed.exit_code == 0, resumed.output
        assert (server.uploads, server.creations) == (1, 1)
