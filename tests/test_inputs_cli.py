"""Files analysts have, as they are: TSV, Excel, stdin/stdout, other encodings, loose header
names, kept columns, and the 6-digit SOC and major-group columns; bad input fails with one line
naming the row (issue 15 point 5; issue 16 items 11 and 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.taxonomy import load_taxonomy

runner = CliRunner()
CODES = set(load_taxonomy().codes)
POSTINGS = pd.DataFrame(
    {
        "id": ["a1", "a2", "a3"],
        "title": ["Registered Nurse", "Staff Accountant", "Forklift Operator"],
        "company": ["Mercy Health", "Acme LLP", "Depot Inc"],
        "city": ["Lyon", "Zürich", "Québec"],
    }
)


def run_cli(*args: str, **kwargs):
    return runner.invoke(app, list(args), catch_exceptions=False, **kwargs)


def check_labels(frame: pd.DataFrame, top_k: int = 2) -> None:
    assert list(frame["id"]) == list(POSTINGS["id"])
    assert list(frame["title"]) == list(POSTINGS["title"])
    for k in range(1, top_k + 1):
        assert frame[f"onet_code_{k}"].isin(CODES).all()
        assert (frame[f"soc_code_{k}"] == frame[f"onet_code_{k}"].str[:7]).all()
    assert (frame["major_group_1"] == frame["onet_code_1"].str[:2] + "-0000").all()
    assert frame.loc[0, "onet_code_1"].startswith("29-1141")  # Registered Nurses


def test_tsv_in_xlsx_out_with_kept_columns(tmp_path: Path):
    source = tmp_path / "jobs.tsv"
    POSTINGS.to_csv(source, sep="\t", index=False)
    output = tmp_path / "labels.xlsx"
    result = run_cli("label", str(source), "-o", str(output), "--top-k", "2",
                     "--keep-columns", "company, city")  # fmt: skip
    assert result.exit_code == 0, result.output
    frame = pd.read_excel(output, dtype=str)
    check_labels(frame)
    assert list(frame.columns[:4]) == ["id", "title", "company", "city"]
    assert list(frame["city"]) == ["Lyon", "Zürich", "Québec"]


def test_xlsx_in_tsv_out_keeps_all_columns(tmp_path: Path):
    source = tmp_path / "jobs.xlsx"
    POSTINGS.to_excel(source, index=False)
    output = tmp_path / "labels.tsv"
    result = run_cli("label", str(source), "-o", str(output), "--top-k", "2", "--keep-all-columns")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(output, sep="\t", dtype=str, keep_default_na=False)
    check_labels(frame)
    assert {"company", "city"} <= set(frame.columns)
    assert list(frame.columns).count("title") == 1 and list(frame.columns).count("id") == 1


def test_stdin_to_stdout_csv_and_jsonl():
    csv_text = POSTINGS.to_csv(index=False)
    result = run_cli("label", "-", "--top-k", "2", input=csv_text)
    assert result.exit_code == 0, result.stderr
    frame = pd.read_csv(pd.io.common.StringIO(result.stdout), dtype=str, keep_default_na=False)
    check_labels(frame)
    assert "labelled 3 rows" in result.stderr  # the summary never mixes with the output
    jsonl = "".join(json.dumps(r) + "\n" for r in POSTINGS.to_dict(orient="records"))
    result = run_cli("label", "-", "-o", "-", "--top-k", "2", input=jsonl)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == ["a1", "a2", "a3"]
    assert records[0]["labels"][0]["soc_code"] == records[0]["labels"][0]["onet_code"][:7]
    assert records[0]["major_group"] == "29-0000"


def test_latin1_input_fails_naming_the_line_and_reads_with_encoding(tmp_path: Path):
    source = tmp_path / "latin1.csv"
    rows = ["id,title"] + [f"{i},Staff Accountant" for i in range(1, 2500)] + ["2500,Caf\xe9 Cook"]
    source.write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    result = runner.invoke(app, ["label", str(source), "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 1
    message = result.stderr.strip().splitlines()[-1]  # after any progress lines
    assert message.startswith("error:") and "Traceback" not in result.output
    assert "line 2501" in message and "0xe9" in message and "--encoding" in message
    result = run_cli("label", str(source), "-o", str(tmp_path / "o.csv"), "--encoding", "latin-1")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "o.csv", dtype=str)
    assert frame["title"].iloc[-1] == "Café Cook"


def test_headers_match_ignoring_case_and_spaces_and_a_miss_lists_the_columns(tmp_path: Path):
    source = tmp_path / "jobs.csv"
    source.write_text("Posting ID,  Job Title ,Company\nx1,Registered Nurse,Mercy\n")
    result = run_cli("label", str(source), "-o", str(tmp_path / "o.csv"),
                     "--id-column", "posting_id", "--keep-columns", "COMPANY")  # fmt: skip
    assert result.exit_code == 0, result.output  # default title column finds 'Job Title'
    frame = pd.read_csv(tmp_path / "o.csv", dtype=str)
    assert frame.loc[0, "id"] == "x1" and frame.loc[0, "Company"] == "Mercy"
    result = runner.invoke(app, ["label", str(source), "--title-column", "position"])
    assert result.exit_code == 1
    assert "missing column 'position'" in result.stderr
    assert "'Posting ID', '  Job Title ', 'Company'" in result.stderr


def test_duplicate_ids_fail_naming_the_rows_unless_allowed(tmp_path: Path):
    source = tmp_path / "jobs.csv"
    source.write_text("id,title\n1,Nurse\n2,Accountant\n1,Welder\n")
    result = runner.invoke(app, ["label", str(source), "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 1
    assert "row 3: id '1' is already used by row 1" in result.stderr
    assert "--allow-duplicate-ids" in result.stderr
    result = run_cli("label", str(source), "-o", str(tmp_path / "o.csv"), "--allow-duplicate-ids")
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(tmp_path / "o.csv", dtype=str)["id"]) == ["1", "2", "1"]


def test_numeric_parquet_titles_are_labelled_with_a_warning_and_count(tmp_path: Path):
    source = tmp_path / "jobs.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "title": [1234, 5678, None]}), source)
    result = run_cli("label", str(source), "-o", str(tmp_path / "o.csv"), "--skip-bad-rows")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "holds numbers" in result.stderr
    assert "2 titles" in result.stderr
