"""End to end against a real local LLM: llama.cpp (xllamacpp) serving SmolLM2-135M-Instruct on
127.0.0.1, through the real openai client with structured output, the cache and the ledger. A
135M model's accuracy is not the point; the plumbing is."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmarks.local_llm import local_llm_server, server_metrics, smollm2_path
from onet_llm.cli import app
from onet_llm.settings import ENVIRONMENT_VARIABLES
from onet_llm.store import Store

pytestmark = pytest.mark.slow
runner = CliRunner()
# Short postings keep the 135M model's prompts small (its answers are deterministic at
# temperature 0, so the second run renders the same requests and hits the cache).
POSTINGS = (
    "id,title,body\n"
    "a1,Staff Accountant,Reconcile accounts and prepare the month-end close.\n"
    "a2,Truck Driver,Drive a tractor-trailer on regional routes; CDL required.\n"
    "a3,Software Developer,Build web applications in Python and JavaScript.\n"
)
COUNTERS = ("prompt_tokens_total", "tokens_predicted_total", "n_decode_total")


@pytest.fixture(scope="module")
def smollm2_url():
    with local_llm_server(smollm2_path(), n_ctx=2048) as base_url:
        yield base_url


def test_a_real_local_llm_writes_rationales_and_a_rerun_makes_no_calls(
    smollm2_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for variable in ENVIRONMENT_VARIABLES.values():
        if variable not in {"ONET_LLM_HOME", "ONET_LLM_STORE"}:
            monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ONET_LLM_MAX_TOKENS", "200")
    postings = tmp_path / "postings.csv"
    postings.write_text(POSTINGS)
    args = ["--llm", "--base-url", smollm2_url, "--llm-model", "smollm2-135m",
            "--shortlist-size", "5", "--top-k", "1", "--concurrency", "1"]  # fmt: skip

    first = runner.invoke(app, ["label", str(postings), "-o", str(tmp_path / "a.csv"), *args])
    assert first.exit_code == 0, first.output
    before = server_metrics(smollm2_url)
    assert before["tokens_predicted_total"] > 0
    frame = pd.read_csv(tmp_path / "a.csv", dtype=str, keep_default_na=False)
    assert list(frame["id"]) == ["a1", "a2", "a3"]
    assert (frame["source"] == "llm").all(), frame[["source", "error"]]
    assert (frame["rationale_1"].str.len() > 0).all()
    assert frame["confidence_1"].astype(float).between(0, 1).all()

    second = runner.invoke(app, ["label", str(postings), "-o", str(tmp_path / "b.csv"), *args])
    assert second.exit_code == 0, second.output
    after = server_metrics(smollm2_url)
    assert {c: after[c] for c in COUNTERS} == {c: before[c] for c in COUNTERS}  # server idle
    again = pd.read_csv(tmp_path / "b.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(frame, again)

    with Store(tmp_path / "store.duckdb") as store:
        ledger = store.ledger()
        calls = store.calls()
    assert list(ledger["calls"]) == [3, 0] and list(ledger["cache_hits"]) == [0, 3]
    assert (calls["status"] == "ok").all() and (calls["tokens_in"] > 0).all()
    assert calls["cost_usd"].isna().all()  # no price for a local model: unknown, not zero
    ledger_cli = runner.invoke(app, ["ledger"])
    assert "0 calls, 3 cache hits" in ledger_cli.output and "unknown" in ledger_cli.output


def test_infer_then_rerank_with_a_real_local_llm_and_a_rerun_makes_no_calls(
    smollm2_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for variable in ENVIRONMENT_VARIABLES.values():
        if variable not in {"ONET_LLM_HOME", "ONET_LLM_STORE"}:
            monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ONET_LLM_MAX_TOKENS", "200")
    postings = tmp_path / "postings.csv"
    postings.write_text(POSTINGS)
    args = ["--llm", "--base-url", smollm2_url, "--llm-model", "smollm2-135m",
            "--llm-stages", "infer,rerank", "--infer-examples", "0",
            "--shortlist-size", "5", "--top-k", "1", "--concurrency", "1"]  # fmt: skip

    first = runner.invoke(app, ["label", str(postings), "-o", str(tmp_path / "a.csv"), *args])
    assert first.exit_code == 0, first.output
    before = server_metrics(smollm2_url)
    frame = pd.read_csv(tmp_path / "a.csv", dtype=str, keep_default_na=False)
    assert list(frame["id"]) == ["a1", "a2", "a3"]
    assert set(frame["source"]) <= {"llm", "fallback"}  # a 135M model may fail validation
    second = runner.invoke(app, ["label", str(postings), "-o", str(tmp_path / "b.csv"), *args])
    assert second.exit_code == 0, second.output
    after = server_metrics(smollm2_url)
    with Store(tmp_path / "store.duckdb") as store:
        ledger = store.ledger()  # one row per run, in order
    # Every answer (infer and rerank) comes from the cache, and so does every reply a 135M
    # model got wrong (asking again would buy the same reply): the server stays idle.
    assert int(ledger["calls"].iloc[1]) == 0
    assert {c: after[c] for c in COUNTERS} == {c: before[c] for c in COUNTERS}

    with Store(tmp_path / "store.duckdb") as store:
        calls = store.calls()
        shortlists = store.db.execute("SELECT shortlist FROM run_rows").fetchall()
    infer = calls[calls["prompt_version"] == "infer_v1"]
    assert len(infer) == 3 and (infer["tokens_in"] > 0).all()
    assert all("Name up to 3" in json.loads(r)["messages"][1]["content"] for r in infer["request"])
    assert set(calls["prompt_version"]) == {"infer_v1", "rerank_v1"}
    assert all(len(json.loads(s)) == 5 for (s,) in shortlists if s)  # fused: still 5 codes
