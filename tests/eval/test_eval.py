"""`onet-llm eval` end to end on the real model and index, and the cascade arithmetic."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.errors import InputError
from onet_llm.eval.datasets import load_dataset
from onet_llm.eval.llm_stage import public_url
from onet_llm.eval.metrics import bootstrap_indices, bootstrap_interval, hit_ranks, metric_values
from onet_llm.eval.modes import (
    EvalOptions,
    LLMRow,
    ModeOutcome,
    cascade_outcome,
    cascade_sweep,
    choose_cascade_threshold,
    complete_ranking,
    llm_summary,
    parse_modes,
    top1_margins,
)
from onet_llm.types import Candidate

runner = CliRunner()

GOLD_ROWS = [
    ("a1", "Registered Nurse", "Provide patient care in our ICU.", "29-1141.00"),
    ("a2", "Senior Java Developer", "Build backend services.", "15-1252.00"),
    ("a3", "Staff Accountant", "Month-end close and reconciliations.", "13-2011.00"),
    ("a4", "Mechanical Engineer", "", "17-2141.00"),
    ("a5", "Elementary School Teacher", "Teach grade 3.", "25-2021.00"),
    ("a6", "Truck Driver CDL-A", "Long haul routes.", "53-3032.00"),
    ("a7", "Data Scientist", "Machine learning models.", "15-2051.00"),
    ("a8", "Forklift Operator", "Warehouse, 2nd shift.", "53-7051.00"),
    ("a9", "Line Cook", "", "35-2014.00"),
    ("a10", "Help Desk Technician", "Tier 1 support.", "15-1232.00"),
    ("a11", "Chief Executive Officer", "Lead the company.", "11-1011.00"),
    ("a12", "Security Guard", "Night shift patrols.", "33-9032.00"),
]


def write_gold(path: Path, rows=GOLD_ROWS) -> Path:
    pd.DataFrame(rows, columns=["id", "title", "body", "onet_code"]).to_csv(path, index=False)
    return path


def invoke(*args: str):
    return runner.invoke(app, ["eval", *args], catch_exceptions=False)


def test_eval_writes_all_files_and_its_numbers_match_the_metric_functions(tmp_path, labeler):
    data = write_gold(tmp_path / "gold.csv")
    out = tmp_path / "report"
    result = invoke("--data", str(data), "--out", str(out), "--resamples", "300")
    assert result.exit_code == 0, result.output
    for name in ("report.md", "report.html", "metrics.json", "predictions.jsonl"):
        assert (out / name).stat().st_size > 0, name

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == len(GOLD_ROWS)
    assert metrics["data"]["name"] == "gold" and len(metrics["data"]["sha256"]) == 64

    # The same shortlists, computed here through the labeler, scored with the metric functions.
    golds = [row[3] for row in GOLD_ROWS]
    shortlists = labeler.shortlist([r[1] for r in GOLD_ROWS], [r[2] for r in GOLD_ROWS], 20)
    predictions = [[c.onet_code for c in shortlist[:10]] for shortlist in shortlists]
    indices = bootstrap_indices(len(golds), 300, 0)
    for level in ("onet", "detailed", "major"):
        ranks = hit_ranks(predictions, golds, level)
        for metric in ("top1", "top3", "top5", "top10", "mrr10"):
            entry = metrics["modes"]["embedding"]["levels"][level][metric]
            values = metric_values(ranks, metric)
            assert entry["value"] == pytest.approx(values.mean()), (level, metric)
            assert (entry["low"], entry["high"]) == pytest.approx(
                bootstrap_interval(values, indices)
            )
        recall_ranks = hit_ranks([[c.onet_code for c in s] for s in shortlists], golds, level)
        assert metrics["shortlist"]["recall"][level]["value"] == pytest.approx(
            np.mean([rank is not None for rank in recall_ranks])
        )
    embedding = metrics["modes"]["embedding"]
    assert embedding["abstain_rate"] == 0.0 and embedding["llm"] is None
    assert sum(group["n"] for group in embedding["by_major_group"]) == len(golds)
    assert sum(item["n"] for item in embedding["by_occupation"]) == len(golds)
    by_code = {item["onet_code"]: item for item in embedding["by_occupation"]}
    onet_ranks = hit_ranks(predictions, golds)
    for gold, rank in zip(golds, onet_ranks, strict=True):
        assert by_code[gold]["top1_hits"] == (rank == 1)
    confusion_total = sum(sum(row.values()) for row in embedding["confusion_major"].values())
    assert confusion_total == len(golds)

    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [record["id"] for record in records] == [row[0] for row in GOLD_ROWS]
    assert [record["modes"]["embedding"]["ranks"]["onet"] for record in records] == onet_ranks

    markdown = (out / "report.md").read_text()
    top1 = embedding["levels"]["onet"]["top1"]
    assert f"{top1['value']:.3f} [{top1['low']:.3f}, {top1['high']:.3f}]" in markdown
    page = (out / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 3 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in page and "https://" not in page.replace("https://doi", "")
    assert "embedding" in result.output and "shortlist recall@20" in result.output


def test_sample_is_seeded_and_compare_prints_paired_differences(tmp_path):
    runs = {}
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        out = tmp_path / name
        result = invoke("--sample", "25", "--seed", seed, "--out", str(out), "--resamples", "200")
        assert result.exit_code == 0, result.output
        runs[name] = [json.loads(line)["id"] for line in (out / "predictions.jsonl").open()]
    assert runs["a"] == runs["b"] and len(runs["a"]) == 25
    assert runs["a"] != runs["c"]
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["data"]["name"] == "dev-ads-test"
    assert metrics["data"]["sample"] == 25 and metrics["data"]["rows_available"] == 185

    same = invoke("--compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert same.exit_code == 0, same.output
    assert "paired bootstrap" in same.output
    assert "+0.000" in same.output and "[+0.000, +0.000]" in same.output
    other = invoke("--compare", str(tmp_path / "a"), str(tmp_path / "c" / "metrics.json"))
    assert other.exit_code == 0, other.output
    assert "unpaired bootstrap" in other.output
    assert len(re.findall(r"embedding", other.output)) >= 15  # 3 levels x 5 metrics


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "id,title,onet_code\n1,Nurse,29-1141.00\n2,Cook,99-9999.00\n",
            "row 2 (id '2'): onet_code",
        ),
        ("id,title,onet_code\n1,Nurse,29-1141.00\n1,Cook,35-2014.00\n", "id repeats row 1"),
        ("id,title,onet_code\n1,Nurse,29-1141.00\n2,,35-2014.00\n", "title and body are both"),
        ("id,title,onet_code\n1,Nurse,\n", "the gold onet_code is empty"),
        ("id,title,code\n1,Nurse,29-1141.00\n", "missing column 'onet_code'"),
    ],
)
def test_bad_gold_files_give_one_line_errors(tmp_path, content, message):
    data = tmp_path / "gold.csv"
    data.write_text(content)
    result = runner.invoke(app, ["eval", "--data", str(data), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2  # one line (rich may wrap it once)
    assert not (tmp_path / "out").exists()


def test_bad_options_give_one_line_errors(tmp_path):
    result = runner.invoke(app, ["eval", "--modes", "embedding,oracle"])
    assert result.exit_code == 1 and "unknown mode 'oracle'" in result.output
    data = write_gold(tmp_path / "gold.csv")
    result = runner.invoke(app, ["eval", "--data", str(data), "--split", "test"])
    assert result.exit_code == 1 and "no 'split' column" in result.output
    result = runner.invoke(app, ["eval", "--compare", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 1 and "not an eval report" in result.output


def test_shipped_datasets_carry_provenance_and_held_out_titles_leave_the_index(taxonomy):
    ads = load_dataset("dev-ads-test", taxonomy)
    assert len(ads.frame) == 185 and not ads.excluded_titles
    assert "never used for training or model selection" in ads.description
    choices = load_dataset("dev-ads-validation", taxonomy)  # the 95 ads choices are made on
    assert len(choices.frame) == 95 and not set(choices.frame["id"]) & set(ads.frame["id"])
    titles = load_dataset("reported-titles-test", taxonomy, sample=20, seed=1)
    assert len(titles.frame) == 20 and titles.sample == 20
    # The whole held-out split leaves the index, so every sample shares one cached index.
    assert len(titles.excluded_titles) == titles.rows_available == 1578
    assert set(titles.frame["title"]) <= set(titles.excluded_titles)
    with pytest.raises(InputError):
        load_dataset("dev-ads-test", taxonomy, sample=0)


def test_a_smaller_sample_is_a_prefix_of_a_larger_one(taxonomy):
    """Rows reach the LLM in draw order, so an interrupted run's cached calls cover any smaller
    sample with the same seed."""
    large = load_dataset("dev-ads-test", taxonomy, sample=60, seed=4)
    small = load_dataset("dev-ads-test", taxonomy, sample=25, seed=4)
    assert list(small.frame["id"]) == list(large.frame["id"])[:25]
    assert list(large.frame["id"]) != sorted(large.frame["id"], key=int)


def test_endpoints_lose_credentials_before_they_reach_a_report():
    assert public_url("https://user:sk-secret@llm.example.com:8443/v1?key=sk-2") == (
        "https://llm.example.com:8443/v1"
    )
    assert public_url("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"
    assert public_url(None) is None


def test_parse_modes_is_canonical():
    assert parse_modes("cascade, embedding,hybrid,embedding") == ("embedding", "hybrid", "cascade")
    with pytest.raises(InputError):
        parse_modes(" , ")
    with pytest.raises(InputError):
        EvalOptions(modes=("embedding",), shortlist_size=5)


# -- the cascade and the LLM bookkeeping, on hand-made rows --------------------------------------


def llm_row(picks, cached=False, source="llm", tokens=(100, 20), cost=0.001, latency=2.0):
    return LLMRow(
        source=source,
        error=None if source == "llm" else "timeout",
        call_key="k",
        cached=cached,
        tokens_in=tokens[0],
        tokens_out=tokens[1],
        cost_usd=cost,
        latency_s=latency,
        predicted=picks,
        none_fits=source == "llm" and not picks,
        reference_cost_usd=cost,
    )


def test_complete_ranking_fills_from_the_shortlist_and_keeps_abstentions_empty():
    shortlist = ["A", "B", "C", "D"]
    assert complete_ranking(["C", "C", "A"], shortlist, 3) == ["C", "A", "B"]
    assert complete_ranking([], shortlist, 3) == []


def test_margins_and_cascade_sweep_by_hand():
    def candidates(*scores):
        return [Candidate(f"{i}", "", s) for i, s in enumerate(scores)]

    margins = top1_margins([candidates(0.9, 0.5), candidates(0.6, 0.55), candidates(0.7), []])
    assert margins == pytest.approx([0.4, 0.05, float("inf"), float("inf")])

    golds = ["11-1011.00", "15-1252.00", "29-1141.00", "35-2014.00"]
    margins = [0.40, 0.05, 0.20, 0.01]
    # The embedding gets rows 1 and 3 right; the LLM gets rows 2 and 4 right and row 1 wrong.
    embedding = ModeOutcome(
        "embedding",
        [["11-1011.00"], ["15-1253.00"], ["29-1141.00"], ["35-2012.00"]],
        ["embedding"] * 4,
        [None] * 4,
    )
    hybrid = ModeOutcome(
        "hybrid",
        [["11-1021.00"], ["15-1252.00"], ["29-1141.00"], ["35-2014.00"]],
        ["llm"] * 4,
        [
            llm_row(["11-1021.00"]),
            llm_row(["15-1252.00"], cached=True),
            llm_row(["29-1141.00"]),
            llm_row(["35-2014.00"]),
        ],
    )
    options = EvalOptions(modes=("embedding", "hybrid", "cascade"))
    sweep = {
        point["threshold"]: point
        for point in cascade_sweep(embedding, hybrid, margins, golds, options)
    }
    assert sweep[0.0]["rows_sent"] == 0 and sweep[0.0]["top1"] == 0.5
    everything = max(sweep.values(), key=lambda point: point["rows_sent"])
    assert everything["rows_sent"] == 4 and everything["top1"] == 0.75
    # One point per distinct number of rows sent.
    assert sorted(point["rows_sent"] for point in sweep.values()) == [0, 1, 2, 3, 4]
    # Sending the two least certain rows (margins 0.01 and 0.05) gets every row right...
    two = cascade_outcome(embedding, hybrid, margins, 0.1)
    assert hit_ranks(two.predictions, golds) == [1, 1, 1, 1]
    assert two.sources == ["embedding", "llm", "embedding", "llm"]
    # ...but the least certain row alone already matches the hybrid's 0.75 at a quarter of
    # its cost, so that is the threshold chosen.
    cheapest = choose_cascade_threshold(list(sweep.values()))
    assert 0.01 < cheapest <= 0.05
    chosen = cascade_outcome(embedding, hybrid, margins, cheapest)
    assert [row is not None for row in chosen.llm_rows] == [False, False, False, True]
    assert sweep[cheapest]["top1"] == 0.75 and sweep[cheapest]["sent_share"] == 0.25

    summary = llm_summary(two.llm_rows, 4)
    assert summary["rows_sent"] == 2 and summary["calls"] == 1 and summary["cache_hits"] == 1
    assert summary["tokens_in"] == 200 and summary["tokens_out"] == 40
    assert summary["cost_usd"] == pytest.approx(0.002)  # cache hits priced as if called
    assert summary["spent_usd"] == pytest.approx(0.001)
    assert summary["cost_per_1000_postings_usd"] == pytest.approx(0.5)
    assert summary["latency_p50_s"] == 2.0 and summary["fallbacks"] == 0


def test_llm_summary_reports_unknown_prices_and_fallbacks():
    rows = [
        llm_row(["A"], cost=None, latency=1.0),
        llm_row([], cost=None, latency=3.0),
        llm_row([], source="fallback", cost=None, latency=5.0),
        None,
    ]
    summary = llm_summary(rows, 4)
    assert summary["cost_usd"] is None and summary["cost_per_1000_postings_usd"] is None
    assert summary["fallbacks"] == 1 and summary["none_fits"] == 1
    assert summary["latency_p50_s"] == 3.0 and summary["latency_p95_s"] == pytest.approx(4.8)
    assert summary["errors"] == [{"error": "timeout", "rows": 1}]


# -- hybrid and cascade through the real reranker and a real local LLM server ------------------


@pytest.fixture(scope="module")
def smollm2_url():
    from benchmarks.local_llm import local_llm_server, smollm2_path

    # One thread: on a busy 2-core machine llama.cpp threads spin-wait on each other.
    with local_llm_server(smollm2_path(), threads=1, alias="smollm2") as base_url:
        yield base_url


@pytest.mark.slow
def test_hybrid_and_cascade_run_end_to_end_and_a_rerun_makes_no_calls(tmp_path, smollm2_url):
    data = write_gold(tmp_path / "gold.csv", GOLD_ROWS[:4])
    common = ["--data", str(data), "--modes", "embedding,hybrid,cascade", "--top-k", "1"]
    common += ["--base-url", smollm2_url, "--llm-model", "smollm2", "--resamples", "200"]
    common += ["--concurrency", "1", "--store", str(tmp_path / "calls.duckdb")]
    common += ["--shortlist-size", "10"]  # a shorter prompt: the plumbing is the point here
    first = invoke(*common, "--out", str(tmp_path / "first"))
    assert first.exit_code == 0, first.output
    metrics = json.loads((tmp_path / "first" / "metrics.json").read_text())
    assert list(metrics["modes"]) == ["embedding", "hybrid", "cascade"]
    hybrid = metrics["modes"]["hybrid"]["llm"]
    assert hybrid["rows_sent"] == 4 and hybrid["calls"] + hybrid["cache_hits"] == 4
    assert hybrid["calls"] >= 1 and hybrid["tokens_in"] > 0 and hybrid["latency_p50_s"] > 0
    assert hybrid["cost_usd"] is None  # a local model has no price...
    assert hybrid["reference_cost_per_1000_postings_usd"] > 0  # ...but its tokens do, for scale
    assert metrics["settings"]["llm"]["model"] == "smollm2"
    assert "OPENAI_API_KEY" not in (tmp_path / "first" / "metrics.json").read_text()

    # Every mode was scored on the same rows, and its numbers follow from its predictions.
    records = [json.loads(line) for line in (tmp_path / "first" / "predictions.jsonl").open()]
    golds = [row[3] for row in GOLD_ROWS[:4]]
    for mode in ("embedding", "hybrid", "cascade"):
        predicted = [record["modes"][mode]["predicted"] for record in records]
        for level in ("onet", "detailed", "major"):
            ranks = hit_ranks(predicted, golds, level)
            assert metrics["modes"][mode]["levels"][level]["top1"]["value"] == pytest.approx(
                metric_values(ranks, "top1").mean()
            )
    for record in records:
        entry = record["modes"]["hybrid"]
        assert entry["source"] in {"llm", "fallback"} and entry["llm"]["call_key"]
        if entry["source"] == "llm" and entry["llm"]["picks"]:
            assert entry["predicted"][:1] == entry["llm"]["picks"][:1]
        else:
            assert entry["predicted"] == record["shortlist"][:10]
    cascade = metrics["cascade"]
    assert cascade["sweep"][0]["rows_sent"] == 0 and cascade["sweep"][-1]["rows_sent"] == 4
    assert "hybrid - embedding" in (tmp_path / "first" / "report.md").read_text()

    # The same evaluation again: every answer comes from the cache, the figures do not move.
    second = invoke(*common, "--out", str(tmp_path / "second"))
    assert second.exit_code == 0, second.output
    again = json.loads((tmp_path / "second" / "metrics.json").read_text())
    rerun = again["modes"]["hybrid"]["llm"]
    # Answers and invalid replies alike come from the cache (a 135M model's invalid reply
    # would be bought again, the same): no call, the same tokens, the same figures.
    assert rerun["cache_hits"] == 4 and rerun["calls"] == 0
    assert rerun["tokens_in"] == hybrid["tokens_in"]
    assert again["modes"]["hybrid"]["levels"] == metrics["modes"]["hybrid"]["levels"]
