"""Review logic, HTTP safety and the `review` commands, without a browser.

Filter semantics for LLM rows are checked on a run whose shortlists come from the real model
and index and whose LLM rankings are written here (marked as such): the exact disagreements,
confidences and fallbacks must be known to check the counts. The browser tests run on a store
filled by the real `label` command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.errors import InputError, StoreError
from onet_llm.review.decisions import record_decision
from onet_llm.review.export import decisions_frame, export_decisions
from onet_llm.review.queries import (
    ReviewFilter,
    filter_counts,
    resolve_run,
    review_rows,
    settings_for_display,
)
from onet_llm.store import Store
from tests.review.review_support import RunningReview, label_into_store

runner = CliRunner()
# (title, LLM pick as a shortlist position or None for the embedding order, confidence, source,
#  rationale, error)
LLM_ROWS = [
    ("Registered Nurse", 0, 0.92, "llm", "Title names the occupation.", None),
    ("Staff Accountant", 1, 0.35, "llm", "Body stresses <b>audit</b> work & reports.", None),
    ("Mechanical Engineer", 0, 0.55, "llm", "Design of machines.", None),
    ("Line Cook 50% off_peak", 2, 0.2, "llm", "Kitchen work.", None),
    ("Truck Driver", None, None, "fallback", None, "LLM answer failed validation twice"),
    ("Software Developer", None, None, "embedding", None, None),
]


@pytest.fixture
def llm_store(labeler, tmp_path: Path) -> tuple[Store, str]:
    """A run with real shortlists and written-here LLM rankings (see LLM_ROWS)."""
    titles = [row[0] for row in LLM_ROWS]
    shortlists = labeler.shortlist(titles, [""] * len(titles), 20)
    records = []
    for number, ((title, pick, confidence, source, rationale, error), shortlist) in enumerate(
        zip(LLM_ROWS, shortlists, strict=True), start=1
    ):
        candidates = [vars(candidate) for candidate in shortlist]
        labels = [dict(candidate) for candidate in candidates[:3]]
        if pick is not None:
            labels = [dict(candidates[pick])] + [
                dict(c) for i, c in enumerate(candidates[:3]) if i != pick
            ][:2]
            labels[0].update(rationale=rationale, confidence=confidence)
        records.append(
            {
                "row_number": number,
                "posting_id": f"p{number}",
                "title": title,
                "body": f"Body of {title}.",
                "shortlist": json.dumps(candidates),
                "labels": json.dumps(labels),
                "source": source,
                "error": error,
                "call_key": f"call-{number}" if source == "llm" else None,
            }
        )
    store = Store(tmp_path / "llm.duckdb")
    run = store.start_run(
        "key",
        "label",
        "llm.csv",
        "llm.labels.csv",
        {"llm": {"model": "smollm2", "api_key": "sk-test-SECRET-123456", "base_url": "http://x"}},
        "model",
        "index",
    )
    store.append_rows(run.run_id, pd.DataFrame(records))
    store.finish_run(run.run_id)
    yield store, run.run_id
    store.close()


def margins(store: Store, run_id: str) -> list[float]:
    """Embedding top-1 minus top-2 score of each row, from the stored shortlists."""
    shortlists = store.db.execute(
        "SELECT shortlist FROM run_rows WHERE run_id = ? ORDER BY row_number", [run_id]
    ).fetchall()
    return [json.loads(s)[0]["score"] - json.loads(s)[1]["score"] for (s,) in shortlists]


def test_counts_and_views_follow_llm_rows(llm_store):
    store, run_id = llm_store
    counts = filter_counts(store, run_id, ReviewFilter())
    # Low confidence: stated confidence < 0.5 (rows 2, 4), or LLM != embedding (2, 4), or an
    # embedding margin < 0.05 (whichever rows have one).
    thin = {
        number for number, margin in enumerate(margins(store, run_id), start=1) if margin < 0.05
    }
    assert counts == {
        "all": 6,
        "disagree": 2,
        "low_confidence": len({2, 4} | thin),
        "problems": 1,
        "unreviewed": 6,
        "reviewed": 0,
        "flagged": 0,
        "reviewers_differ": 0,
        "bulk": 6,  # what a bulk accept of "all" would take: open rows with a label
    }
    no_margin = filter_counts(store, run_id, ReviewFilter(margin_below=0.0))
    assert no_margin["low_confidence"] == 2  # confidence and disagreement alone
    rows, total = review_rows(store, run_id, ReviewFilter(view="disagree"))
    assert total == 2 and [row.title for row in rows] == ["Staff Accountant", titles(3)]
    assert all(row.disagrees for row in rows)
    assert rows[0].label["rationale"].startswith("Body stresses")
    assert rows[0].shortlist[1]["label_rank"] == 1  # the LLM's pick, marked in the shortlist
    rows, _ = review_rows(
        store,
        run_id,
        ReviewFilter(view="low_confidence", low_confidence_below=0.6, margin_below=0.0),
    )
    assert [row.confidence for row in rows] == [0.35, 0.55, 0.2]
    rows, _ = review_rows(store, run_id, ReviewFilter(view="problems"))
    assert rows[0].source == "fallback" and "validation" in rows[0].error
    rows, _ = review_rows(store, run_id, ReviewFilter(sort="confidence_asc"))
    assert [row.confidence for row in rows] == [0.2, 0.35, 0.55, 0.92, None, None]
    rows, _ = review_rows(store, run_id, ReviewFilter(sort="confidence_desc"))
    assert [row.confidence for row in rows][:4] == [0.92, 0.55, 0.35, 0.2]


def titles(number: int) -> str:
    return LLM_ROWS[number][0]


def test_free_text_occupation_and_group_filters(llm_store):
    store, run_id = llm_store
    assert filter_counts(store, run_id, ReviewFilter(text="audit"))["all"] == 1  # rationale
    assert filter_counts(store, run_id, ReviewFilter(text="50%"))["all"] == 1
    assert filter_counts(store, run_id, ReviewFilter(text="%"))["all"] == 1  # literal, no wildcard
    assert filter_counts(store, run_id, ReviewFilter(text="off_peak"))["all"] == 1
    assert filter_counts(store, run_id, ReviewFilter(text="o_f"))["all"] == 0
    rows, _ = review_rows(store, run_id, ReviewFilter(onet_code="29-1141.00"))
    assert [row.title for row in rows] == ["Registered Nurse"]
    counts = filter_counts(store, run_id, ReviewFilter(major_group="29"))
    assert counts["all"] == 1 and counts["disagree"] == 0
    rows, total = review_rows(store, run_id, ReviewFilter(page=2, page_size=4))
    assert total == 6 and [row.row_number for row in rows] == [5, 6]


def test_decisions_keep_history_and_export_in_training_layout(llm_store, taxonomy, tmp_path):
    store, run_id = llm_store
    first = record_decision(
        store, taxonomy, run_id, 2, "override", "ana", "13-2011.00", "auditor title"
    )
    assert (
        first.previous_onet_code
        == review_rows(store, run_id, ReviewFilter())[0][1].label["onet_code"]
    )
    # Reviewers are independent: ben's accept is of the run's own label, not of ana's override.
    second = record_decision(store, taxonomy, run_id, 2, "accept", "ben")
    assert second.onet_code == second.previous_onet_code == first.previous_onet_code
    assert decisions_frame(store, run_id).empty  # they disagree: no gold label yet
    assert filter_counts(store, run_id, ReviewFilter())["reviewers_differ"] == 1
    settled = record_decision(
        store, taxonomy, run_id, 2, "override", "cleo", "13-2011.00", role="adjudication"
    )
    assert settled.role == "adjudication"
    assert filter_counts(store, run_id, ReviewFilter())["reviewers_differ"] == 0
    same = record_decision(store, taxonomy, run_id, 1, "override", "ana", "29-1141.00")
    assert same.action == "accept"  # overriding with the label it already has
    with pytest.raises(InputError, match="not an O\\*NET 30.1 occupation code"):
        record_decision(store, taxonomy, run_id, 3, "override", "ana", "99-9999.99")
    with pytest.raises(InputError, match="reviewer"):
        record_decision(store, taxonomy, run_id, 3, "accept", "  ")
    with pytest.raises(InputError, match="no row 99"):
        record_decision(store, taxonomy, run_id, 99, "accept", "ana")

    counts = filter_counts(store, run_id, ReviewFilter())
    assert counts["reviewed"] == 2 and counts["unreviewed"] == 4
    assert filter_counts(store, run_id, ReviewFilter(reviewer="ben"))["reviewed"] == 1
    frame = decisions_frame(store, run_id)
    assert list(frame["row_number"]) == [1, 2]
    row = frame.iloc[1]
    assert (row["id"], row["onet_code"], row["decision"], row["reviewer"]) == (
        "p2",
        "13-2011.00",
        "override",
        "cleo",
    )
    assert len(decisions_frame(store, run_id, only_overrides=True)) == 1
    history = store.db.execute(
        "SELECT action, reviewer FROM review_decisions WHERE row_number = 2 ORDER BY decision_id"
    ).fetchall()
    assert history == [("override", "ana"), ("accept", "ben"), ("override", "cleo")]

    for name in ("c.csv", "c.jsonl", "c.parquet"):
        assert export_decisions(store, tmp_path / name, run_id).rows == 2
    from onet_llm.train.data import read_postings

    assert list(read_postings(tmp_path / "c.csv", taxonomy)["onet_code"]) == [
        "29-1141.00",
        "13-2011.00",
    ]
    csv_rows = pd.read_csv(tmp_path / "c.csv", dtype=str, keep_default_na=False)
    assert list(csv_rows.columns[:4]) == ["id", "title", "body", "onet_code"]
    assert csv_rows.loc[1, "note"] == ""
    jsonl = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert jsonl[0]["previous_onet_code"] == "29-1141.00"
    assert jsonl[1]["previous_onet_code"] == first.previous_onet_code
    assert pd.read_parquet(tmp_path / "c.parquet")["onet_code"].tolist() == [
        "29-1141.00",
        "13-2011.00",
    ]
    with pytest.raises(StoreError, match="no run 'nope'"):
        export_decisions(store, tmp_path / "d.csv", "nope")
    with pytest.raises(InputError, match="unknown extension"):
        export_decisions(store, tmp_path / "d.xls")  # .xlsx is a table format now


def test_resolve_run_picks_newest_and_settings_hide_secrets(llm_store):
    store, run_id = llm_store
    assert resolve_run(store, None).run_id == run_id
    settings = resolve_run(store, run_id).settings
    assert settings["llm.api_key"] == "(redacted)" and settings["llm.model"] == "smollm2"
    assert settings_for_display('{"note": "Bearer abc.def", "x": "sk-abcdefghijkl"}') == {
        "note": "(redacted)",
        "x": "(redacted)",
    }


def fetch(url: str, data: dict | None = None, headers: dict | None = None):
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers or {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_server_escapes_guards_and_hides_secrets(llm_store):
    store, run_id = llm_store
    store.close()
    review = RunningReview(store.path)
    try:
        status, headers, html = fetch(review.url + "?view=disagree")
        assert status == 200
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "Body stresses &lt;b&gt;audit&lt;/b&gt; work &amp; reports." in html
        assert "<b>audit" not in html
        assert "SECRET" not in html and "(redacted)" in html
        assert re.search(r'data-count="disagree">2<', html)

        token = re.search(r'name="token" value="([^"]+)"', html).group(1)
        decision = {"run": run_id, "row_number": "4", "action": "accept", "reviewer": "eve"}
        assert fetch(review.url + "decide", decision)[0] == 403  # no form token
        assert fetch(review.url, headers={"Host": "attacker.example"})[0] == 400
        status, headers, _ = fetch(
            review.url + "decide", {**decision, "token": token, "back": "https://evil.example/"}
        )
        assert status == 303 and headers["location"] == "/#row-4"
        status, _, html = fetch(
            review.url + "decide",
            {**decision, "token": token, "onet_code": "bad"} | {"action": "override"},
        )
        assert status == 400 and "&#39;bad&#39; is not an O*NET 30.1 occupation code" in html

        # Same-origin POSTs only: a page elsewhere cannot post a decision, token or not.
        evil = {"Origin": "http://evil.example"}
        assert fetch(review.url + "decide", {**decision, "token": token}, evil)[0] == 403
        own = {"Origin": review.url.rstrip("/")}
        assert fetch(review.url + "decide", {**decision, "token": token}, own)[0] == 303

        status, _, body = fetch(review.url + "api/occupations?q=registered%20nurse")
        assert status == 200 and {"onet_code": "29-1141.00", "onet_title": "Registered Nurses"} in (
            json.loads(body)
        )
        status, headers, csv_text = fetch(review.url + f"export.csv?run={run_id}")
        assert status == 200 and headers["content-type"].startswith("text/csv")
        assert csv_text.splitlines()[0].startswith("id,title,body,onet_code,")
        assert fetch(review.url + "?run=missing")[0] == 503
    finally:
        review.stop()


def test_prompt_panel_shows_what_was_sent_escaped_and_without_secrets(llm_store):
    """The LLM panel shows the messages as sent, the parameters, raw and parsed answer and
    rounded latency; markup in them stays text and key-shaped strings are blanked."""
    store, run_id = llm_store
    store.record_call(
        {
            "call_key": "call-2",
            "model": "smollm2",
            "prompt_version": "rerank_v1",
            "prompt_hash": "p",
            "schema_hash": "s",
            "request": {
                "messages": [
                    {"role": "system", "content": "Pick from the numbered candidates."},
                    {
                        "role": "user",
                        "content": "Posting: <script>window.__pwned=1</script> Staff "
                        "Accountant\n1. 13-2011.00 Accountants and Auditors\n"
                        "key sk-live-ABCDEFGHIJKLMNOP",
                    },
                ],
                "parameters": {"temperature": 0, "api_key": "sk-hidden-0123456789"},
                "structured_output": "json_schema",
            },
            "response_raw": '{"choices": [1], "note": "<img src=x onerror=alert(1)>"}',
            "response_parsed": {"labels": [{"onet_code": "13-2011.00"}]},
            "tokens_in": 1234,
            "tokens_out": 56,
            "cost_usd": 0.000123,
            "latency_s": 342.58295131399996,
            "status": "ok",
            "attempts": 2,
            "validation_retries": 1,
            "transport_retries": 0,
        },
        run_id,
        cached=False,
    )
    store.close()
    review = RunningReview(store.path)
    try:
        status, _, html = fetch(review.url + "?view=disagree")
        assert status == 200
        panel = re.search(r'<details class="call">(.*?)</details>', html, re.S).group(1)
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt; Staff Accountant" in panel
        assert "1. 13-2011.00 Accountants and Auditors" in panel
        assert "&lt;img src=x onerror=alert(1)&gt;" in panel and "<img" not in panel
        assert "342.58 s" in panel and "342.5829" not in panel
        assert "1,234" in panel and "$0.000123" in panel and "temperature=0" in panel
        assert "structured_output=json_schema" in panel
        assert "&#34;onet_code&#34;: &#34;13-2011.00&#34;" in panel  # the parsed answer
        assert "sk-live" not in html and "sk-hidden" not in html and "api_key" not in panel
    finally:
        review.stop()


def test_ipv6_loopback_url_answers(llm_store):
    """`review --host ::1` prints http://[::1]:PORT/; that URL must answer, not 400."""
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    store, _ = llm_store
    store.close()
    try:
        review = RunningReview(store.path, host="[::1]")
    except InputError as error:
        pytest.skip(f"cannot bind ::1 here: {error}")
    try:
        assert review.url.startswith("http://[::1]:")
        status, _, html = fetch(review.url)
        assert status == 200 and "Registered Nurse" in html
        assert fetch(review.url, headers={"Host": "evil.example"})[0] == 400
    finally:
        review.stop()


def test_csv_export_neutralises_formulas(llm_store, taxonomy, tmp_path):
    """Cells a spreadsheet would run (=, +, -, @, tab, CR first) get a leading ' in CSV only."""
    from onet_llm.tables import neutralise_formula

    assert [neutralise_formula(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx")] == [
        "'=1+1",
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
    ]
    assert neutralise_formula("Nurse = care") == "Nurse = care"
    store, run_id = llm_store
    store.db.execute(
        "UPDATE run_rows SET posting_id = '=HYPERLINK(\"http://evil\")', "
        "title = '@SUM(1+1)', body = '-2+3' WHERE row_number = 1"
    )
    record_decision(store, taxonomy, run_id, 1, "accept", "ana", note="+cmd|' /C calc'!A0")
    export_decisions(store, tmp_path / "c.csv", run_id)
    export_decisions(store, tmp_path / "c.parquet", run_id)
    export_decisions(store, tmp_path / "c.jsonl", run_id)
    row = pd.read_csv(tmp_path / "c.csv", dtype=str, keep_default_na=False).iloc[0]
    assert (row["id"], row["title"], row["body"]) == (
        '\'=HYPERLINK("http://evil")',
        "'@SUM(1+1)",
        "'-2+3",
    )
    assert row["note"] == "'+cmd|' /C calc'!A0" and row["onet_code"][0].isdigit()
    raw = pd.read_parquet(tmp_path / "c.parquet").iloc[0]
    assert (raw["title"], raw["note"]) == ("@SUM(1+1)", "+cmd|' /C calc'!A0")
    jsonl = json.loads((tmp_path / "c.jsonl").read_text().splitlines()[0])
    assert jsonl["id"] == '=HYPERLINK("http://evil")'


def test_review_commands_fail_in_one_line(tmp_path: Path):
    missing = tmp_path / "none.duckdb"
    for args in (
        ["review", "--store", str(missing)],
        ["review", "export", "--out", str(tmp_path / "c.csv"), "--store", str(missing)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "no such store" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    Store(tmp_path / "empty.duckdb").close()
    result = runner.invoke(app, ["review", "--store", str(tmp_path / "empty.duckdb")])
    assert result.exit_code == 1 and "no labelling runs yet" in result.output


@pytest.mark.slow
def test_review_command_serves_a_labelled_store_on_loopback(onet_home: Path, tmp_path: Path):
    store = label_into_store(tmp_path, onet_home)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, "-m", "onet_llm.cli", "review", "--store", str(store), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines = [process.stdout.readline(), process.stdout.readline()]
        url = re.search(r"open (http://\S+)", "".join(lines)).group(1)
        assert url.startswith("http://127.0.0.1:")
        status, _, html = fetch(url)
        assert status == 200 and "Medical Affairs Scientist" in html
        assert "&lt;script&gt;window.__pwned" in html and "<script>window" not in html
        busy = runner.invoke(
            app, ["review", "--store", str(store), "--port", url.split(":")[2][:-1]]
        )
        assert busy.exit_code == 1 and "pass another --port" in busy.output
    finally:
        process.terminate()
        process.wait(timeout=10)
