"""CLI conventions and records (issue 15, point 6): -h, completion, flags without a `<bool>`
placeholder, choices as enums, integer counts, and `runs` / `logs` reading the store back."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.settings import ENVIRONMENT_VARIABLES
from tests.rerank.fault_server import FaultServer

runner = CliRunner()
SECRET = "sk-test-NEVER-IN-LOGS-5151"


def test_dash_h_completion_and_no_bool_placeholders():
    for command in ([], ["label"], ["review"], ["review", "export"], ["logs"]):
        result = runner.invoke(app, [*command, "-h"], terminal_width=120)
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output and "<bool>" not in result.output
    top = runner.invoke(app, ["-h"]).output
    assert "--install-completion" in top and "runs" in top and "logs" in top
    label_help = runner.invoke(app, ["label", "-h"], terminal_width=200).output
    assert "<always|uncertain>" in label_help and "<embedding|shuffle>" in label_help


def test_a_choice_typo_fails_before_anything_runs(example_postings: Path):
    result = runner.invoke(app, ["label", str(example_postings), "--llm-when", "sometimes"])
    assert result.exit_code == 2 and "sometimes" in result.output


def test_search_several_titles_and_json(tmp_path: Path):
    titles = tmp_path / "titles.txt"
    titles.write_text("Welder\n\nLine Cook\n")
    result = runner.invoke(app, ["search", "Registered Nurse", "-f", str(titles), "-n", "3",
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["title"] for r in records] == ["Registered Nurse", "Welder", "Line Cook"]
    assert all(len(r["matches"]) == 3 for r in records)
    assert records[0]["matches"][0]["soc_code"] == "29-1141"
    table = runner.invoke(app, ["search", "Welder", "Line Cook", "-n", "2"], terminal_width=120)
    assert table.exit_code == 0 and "'Welder'" in table.output and "'Line Cook'" in table.output


def test_runs_and_logs_show_each_call_and_the_ledger_counts_integers(
    example_postings: Path, tmp_path: Path, monkeypatch
):
    for variable in ENVIRONMENT_VARIABLES.values():
        if variable not in {"ONET_LLM_HOME", "ONET_LLM_STORE"}:
            monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FaultServer() as server:
        result = runner.invoke(app, ["label", str(example_postings), "-o",
                                     str(tmp_path / "out.csv"), "--llm", "--base-url",
                                     server.base_url, "--llm-model", "fault-model"])  # fmt: skip
    assert result.exit_code == 0, result.output
    runs = runner.invoke(app, ["runs", "--json"])
    assert runs.exit_code == 0, runs.output
    (run,) = json.loads(runs.stdout)
    assert run["status"] == "done" and run["rows_done"] == 20 and run["sources"] == {"llm": 20}
    assert run["input_path"] == str(example_postings)
    logs = runner.invoke(app, ["logs", "--run", run["run_id"], "--json", "-n", "0"])
    calls = json.loads(logs.stdout)
    assert len(calls) == 20 and {c["status"] for c in calls} == {"ok"}
    call = calls[0]
    assert call["model"] == "fault-model" and call["tokens_in"] > 0 and call["latency_s"] > 0
    assert call["request"]["messages"][0]["role"] == "system"
    assert "choices" in call["response_raw"]
    text = runner.invoke(app, ["logs", "-n", "1"], terminal_width=120).output
    assert "fault-model: ok" in text and "response" in text and "user" in text
    assert SECRET not in logs.stdout + text
    ledger = runner.invoke(app, ["ledger"]).output
    assert "20 requests, 20 calls" in ledger and "20 HTTP requests" in ledger
    assert ".0 " not in ledger  # counts are integers, not floats
