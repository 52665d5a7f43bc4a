"""The eval report shows the misclassified postings and the accuracy-vs-score curve, accepts
6-digit gold codes (scored at 6 and 2 digits) and keeps plot labels whole (issue 15, point 7)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from onet_llm.cli import app

runner = CliRunner()
GOLD = """id,title,onet_code
1,Registered Nurse,29-1141.00
2,Staff Accountant,13-2011.00
3,Forklift Operator,53-7051.00
4,Line Cook,35-2014
5,Python Developer,29-1141.00
6,Welder,51-4121
"""


def test_report_has_misclassified_rows_coverage_curve_and_takes_six_digit_golds(tmp_path: Path):
    data = tmp_path / "gold.csv"
    data.write_text(GOLD)
    out = tmp_path / "report"
    result = runner.invoke(app, ["eval", "--data", str(data), "--out", str(out),
                                 "--resamples", "100"], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gold_six_digit_rows"] == 2
    wrong = {row["title"]: row for row in metrics["misclassified"]["rows"]}
    assert "Python Developer" in wrong and wrong["Python Developer"]["gold"] == "29-1141.00"
    for row in wrong.values():  # a 6-digit gold is met by any occupation inside it
        assert row["predicted"][: len(row["gold"])] != row["gold"]
    curve = metrics["coverage"]
    assert [p["coverage"] for p in curve] == sorted((p["coverage"] for p in curve), reverse=True)
    assert curve[0]["rows"] == 6
    report = (out / "report.md").read_text()
    assert "## Misclassified postings" in report and "| Python Developer | 29-1141.00" in report
    assert "## Accuracy vs score" in report and "coverage.png" in report
    assert "2 gold codes are 6-digit SOC codes" in report
    assert (out / "plots" / "coverage.png").stat().st_size > 1000
    detailed = metrics["modes"]["embedding"]["levels"]["detailed"]["top1"]["value"]
    assert detailed >= 4 / 6  # nurse, accountant, forklift, cook/welder at 6 digits
