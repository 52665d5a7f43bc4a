"""Drive the real command line and look at the files it writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.taxonomy import load_taxonomy

runner = CliRunner()
CODES = set(load_taxonomy().codes)


def run_cli(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if ".labels" in p.name or p.name.endswith(".partial")
    )


@pytest.mark.parametrize("extension", ["csv", "parquet", "jsonl"])
def test_label_writes_k_valid_codes_per_row(example_postings: Path, tmp_path: Path, extension: str):
    output = tmp_path / f"out.{extension}"
    result = run_cli("label", str(example_postings), "-o", str(output), "--top-k", "3")
    assert result.exit_code == 0, result.output
    source = pd.read_csv(example_postings, dtype=str, keep_default_na=False)
    if extension == "jsonl":
        records = [json.loads(line) for line in output.read_text().splitlines()]
        assert [record["id"] for record in records] == list(source["id"])
        for record in records:
            assert len(record["labels"]) == 3 and record["source"] == "embedding"
            assert all(label["onet_code"] in CODES for label in record["labels"])
            scores = [label["score"] for label in record["labels"]]
            assert scores == sorted(scores, reverse=True)
        return
    frame = pd.read_csv(output, dtype=str) if extension == "csv" else pd.read_parquet(output)
    assert list(frame["id"]) == list(source["id"])
    assert [f"onet_code_{k}" for k in (1, 2, 3)] == [
        c for c in frame.columns if c.startswith("onet_code_")
    ]
    for k in (1, 2, 3):
        assert frame[f"onet_code_{k}"].isin(CODES).all()
        assert frame[f"onet_title_{k}"].str.len().gt(0).all()
    assert (frame["source"] == "embedding").all()
    assert "body" not in frame.columns  # input columns are not copied


def test_default_output_sits_beside_the_input_and_ids_stay_strings(tmp_path: Path):
    postings = tmp_path / "jobs.csv"
    postings.write_text("id,title\n007,Registered Nurse\n1e3,Staff Accountant\n")
    result = run_cli("label", str(postings))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "jobs.labels.csv", dtype=str)
    assert list(frame["id"]) == ["007", "1e3"]
    assert frame.loc[0, "onet_code_1"] == "29-1141.00"
    assert len([c for c in frame.columns if c.startswith("onet_code_")]) == 5


def test_titles_only_file_without_id_column_uses_row_numbers(tmp_path: Path):
    postings = tmp_path / "titles.jsonl"
    postings.write_text(
        '{"title": "Mechanical Engineer"}\n{"title": "Elementary School Teacher"}\n'
    )
    result = run_cli("label", str(postings), "-o", str(tmp_path / "titles.labels.csv"))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "titles.labels.csv", dtype=str)
    assert list(frame["id"]) == ["1", "2"]
    assert frame.loc[0, "onet_code_1"] == "17-2141.00"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", "id,headline\n1,Nurse\n", "missing column 'title'"),
        ("empty.csv", "", "the file is empty"),
        ("header_only.csv", "id,title,body\n", "no rows to label"),
        ("postings.xls", "id,title\n1,Nurse\n", "unknown extension '.xls'"),
        ("postings.xlsx", "id,title\n1,Nurse\n", "cannot read as an Excel workbook"),
        ("broken.parquet", "this is not parquet", "cannot parse as parquet"),
        ("broken.jsonl", '{"title": "Nurse"}\n{"title": \n', "line 2 is not valid JSON"),
        (
            "blank_row.csv",
            "id,title,body\n1,Nurse,\n2,,\n",
            "row 2 (id '2'): title and body are both empty",
        ),
    ],
)
def test_bad_input_gives_one_line_error_and_no_output(
    tmp_path: Path, name: str, content: str, message: str
):
    postings = tmp_path / name
    postings.write_text(content)
    result = runner.invoke(app, ["label", str(postings), "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 1
    error_lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(error_lines) == 1 and message in error_lines[0], result.output
    assert "Traceback" not in result.output
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.csv").exists()


def test_unreadable_paths_give_one_line_errors(tmp_path: Path):
    (tmp_path / "dir.csv").mkdir()
    for target, message in (
        (tmp_path / "nope.csv", "no such file"),
        (tmp_path / "dir.csv", "not a file"),
    ):
        result = runner.invoke(app, ["label", str(target)])
        assert result.exit_code == 1 and message in result.output, result.output


def test_skip_bad_rows_keeps_every_row(tmp_path: Path):
    postings = tmp_path / "mixed.csv"
    postings.write_text("id,title,body\n1,Registered Nurse,\n2,,\n3,Accountant,\n")
    result = run_cli("label", str(postings), "--skip-bad-rows")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "mixed.labels.csv", dtype=str, keep_default_na=False)
    assert list(frame["id"]) == ["1", "2", "3"]
    assert list(frame["source"]) == ["embedding", "error", "embedding"]
    assert (
        frame.loc[1, "error"] == "title and body are both empty"
        and frame.loc[1, "onet_code_1"] == ""
    )


def test_a_killed_run_resumes_after_its_last_committed_chunk(labeler, example_postings, tmp_path):
    from onet_llm.errors import Interrupted
    from onet_llm.label import LabelOptions, label_file
    from onet_llm.store import Store

    options = LabelOptions(chunk_size=6)
    output = tmp_path / "resumed.csv"
    seen: list[int] = []

    def interrupt_after_two_chunks(done: int, total: int | None) -> None:
        seen.append(done)
        if done >= 12:
            raise KeyboardInterrupt

    with Store(tmp_path / "store.duckdb") as store:
        with pytest.raises(Interrupted, match="12 rows are committed"):
            label_file(
                labeler,
                store,
                example_postings,
                output,
                options,
                {},
                "k",
                interrupt_after_two_chunks,
            )
        assert not output.exists()
        assert store.runs().loc[0, "status"] == "interrupted"
        summary = label_file(labeler, store, example_postings, output, options, {}, "k")
        assert summary.resumed_from == 12 and summary.rows == 20
        runs = store.runs()
        assert len(runs) == 1 and runs.loc[0, "status"] == "done"
        fresh = label_file(
            labeler, store, example_postings, tmp_path / "fresh.csv", options, {}, "k"
        )
        assert fresh.resumed_from == 0
    pd.testing.assert_frame_equal(pd.read_csv(output), pd.read_csv(tmp_path / "fresh.csv"))


def test_search_and_about_print_for_a_person():
    result = run_cli("search", "Registered Nurse", "-n", "5")
    assert result.exit_code == 0 and "29-1141.00" in result.output
    result = run_cli("about")
    assert (
        result.exit_code == 0
        and "CC BY 4.0" in result.output
        and "1016 occupations" in result.output
    )
    assert os.environ["ONET_LLM_HOME"]  # the fixture isolates the cache and store


@pytest.mark.parametrize(
    "command",
    [
        ["ledger"],
        ["search", "Registered Nurse"],
        ["label", "postings.csv"],
        ["eval", "--sample", "5"],
        ["review", "export", "--run", "r1", "-o", "out.csv"],
        ["review", "--run", "r1"],
        ["train", "--data", "missing.csv"],
    ],
)
def test_every_command_turns_a_bad_environment_variable_into_one_line(
    command: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    (tmp_path / "postings.csv").write_text("id,title\n1,Nurse\n")
    monkeypatch.setenv("ONET_LLM_CONCURRENCY", "abc")
    result = runner.invoke(app, command)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines == ["error: ONET_LLM_CONCURRENCY: expected a number, got 'abc'"], result.output
