"""Queues, agreement, the audit sample's accuracy estimate, bulk accept, undo and the store
migration, on a store filled by the real `label` command over real postings.

Agreement and accuracy are recomputed here from the decisions the test made, independently of
the package (scikit-learn's Cohen's kappa; the stratified estimator written out longhand).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.errors import InputError
from onet_llm.review.decisions import bulk_accept, bulk_accept_rows, record_decision
from onet_llm.review.export import decisions_frame
from onet_llm.review.queries import (
    ReviewFilter,
    filter_counts,
    load_rows,
    resolve_run,
    review_rows,
)
from onet_llm.review.queues import agreement_summary, assign_queues, split_rows
from onet_llm.review.sampling import Z_95, accuracy_estimates, draw_sample
from onet_llm.store import Store
from onet_llm.store.migrations import MIGRATIONS
from tests.review.review_support import RunningReview, label_into_store
from tests.review.test_review import fetch

runner = CliRunner()
OTHER_CODES = ["29-1141.00", "13-2011.00", "15-1252.00", "41-2031.00"]


@pytest.fixture(scope="module")
def labelled_store(tmp_path_factory: pytest.TempPathFactory, onet_home: Path) -> Path:
    return label_into_store(tmp_path_factory.mktemp("audit"), onet_home)


@pytest.fixture
def store_copy(labelled_store: Path, tmp_path: Path):
    path = tmp_path / "store.duckdb"
    path.write_bytes(labelled_store.read_bytes())
    store = Store(path)
    yield store, resolve_run(store, None).run_id
    store.close()


def test_split_rows_is_seeded_and_shares_the_overlap():
    rows = list(range(1, 101))
    entries = split_rows(rows, ["ana", "ben", "cleo"], 0.3, seed=7)
    assert entries == split_rows(rows, ["ana", "ben", "cleo"], 0.3, seed=7)
    assert entries != split_rows(rows, ["ana", "ben", "cleo"], 0.3, seed=8)
    seen: dict[int, list[str]] = {}
    for reviewer, row, _, _ in entries:
        seen.setdefault(row, []).append(reviewer)
    assert set(seen) == set(rows)  # every row is somebody's
    assert sum(len(names) == 2 for names in seen.values()) == 30
    pairs = pd.Series([tuple(sorted(n)) for n in seen.values() if len(n) == 2]).value_counts()
    assert set(pairs) == {10}  # each pair shares the same number of rows
    with pytest.raises(InputError, match="between 0 and 1"):
        split_rows(rows, ["ana", "ben"], 1.5, 0)
    with pytest.raises(InputError, match="at least two reviewers"):
        split_rows(rows, ["ana"], 0.1, 0)


def test_two_reviewers_on_overlapping_queues_agreement_and_kappa(store_copy, taxonomy):
    store, run_id = store_copy
    assignment = assign_queues(store, run_id, ["ana", "ben"], overlap=0.6, seed=1)
    queues = store.db.execute(
        "SELECT reviewer, row_number, overlap FROM review_queues ORDER BY reviewer, position"
    ).df()
    assert assignment.rows == 23 and assignment.overlap_rows == 14
    rng = np.random.default_rng(5)
    given: dict[tuple[str, int], str] = {}
    labels = {
        row.row_number: row.label["onet_code"] if row.label else None
        for row in review_rows(store, run_id, ReviewFilter(page_size=100))[0]
    }
    for reviewer, row_number, _ in queues.itertuples(index=False):
        label = labels[row_number]
        if label and rng.random() < 0.6:
            decision = record_decision(store, taxonomy, run_id, row_number, "accept", reviewer)
        else:
            code = OTHER_CODES[int(rng.integers(len(OTHER_CODES)))]
            decision = record_decision(
                store, taxonomy, run_id, row_number, "override", reviewer, code
            )
        given[(reviewer, row_number)] = decision.onet_code
    # One of ana's overlap decisions is changed (undo, then another label): history, not
    # overwrite, and only the decision in force counts.
    first_shared = int(queues[(queues.reviewer == "ana") & queues.overlap].row_number.iloc[0])
    record_decision(store, taxonomy, run_id, first_shared, "undo", "ana")
    changed = record_decision(
        store, taxonomy, run_id, first_shared, "override", "ana", "17-2141.00"
    )
    given[("ana", first_shared)] = changed.onet_code

    shared = sorted(set(queues[queues.overlap].row_number))
    ana = [given[("ana", row)] for row in shared]
    ben = [given[("ben", row)] for row in shared]
    expected_kappa = cohen_kappa_score(ana, ben)
    expected_agreed = sum(a == b for a, b in zip(ana, ben, strict=True))

    summary = agreement_summary(store, run_id)
    (pair,) = summary.pairs
    assert (pair.first, pair.second, pair.rows) == ("ana", "ben", len(shared))
    assert pair.agreed == expected_agreed
    assert pair.kappa == pytest.approx(expected_kappa, abs=1e-12)
    progress = {p.reviewer: (p.assigned, p.decided) for p in summary.progress}
    assert progress == {
        name: (int((queues.reviewer == name).sum()),) * 2 for name in ("ana", "ben")
    }
    differ = filter_counts(store, run_id, ReviewFilter())["reviewers_differ"]
    assert differ == len(shared) - expected_agreed
    history = store.db.execute(
        "SELECT count(*) FROM review_decisions WHERE row_number = ? AND reviewer = 'ana'",
        [first_shared],
    ).fetchone()[0]
    assert history == 3  # the first decision, its undo, the new one

    store.close()
    review = RunningReview(store.path, reviewer="ana")
    try:
        status, _, html = fetch(review.url)
        assert status == 200
        row = re.search(r'data-pair="ana\|ben">(.*?)</tr>', html).group(1)
        assert f"{100 * expected_agreed / len(shared):.1f}%" in row
        assert f"{expected_kappa:.3f}" in row
        status, _, html = fetch(review.url + "?view=reviewers_differ")
        assert html.count('<article class="posting') == differ
        assert 'name="role" value="adjudication"' in html
    finally:
        review.stop()


def direct_estimate(sample: pd.DataFrame, decisions: dict[int, str], domain) -> tuple:
    """Stratified ratio estimate, its linearised variance and the Wilson interval on the
    effective sample size, written out longhand."""
    reviewed = sample[sample.row_number.isin(list(decisions))]
    n_h = reviewed.groupby("stratum").size()
    numerator = denominator = 0.0
    for row in reviewed.itertuples():
        weight = row.stratum_rows / n_h[row.stratum]
        if domain(row):
            numerator += weight * (decisions[row.row_number] == row.label_code)
            denominator += weight
    p = numerator / denominator
    variance = 0.0
    for _, group in reviewed.groupby("stratum"):
        size, population = len(group), group.stratum_rows.iloc[0]
        if size < 2:
            continue
        scores = [
            (population / size) * domain(row) * ((decisions[row.row_number] == row.label_code) - p)
            for row in group.itertuples()
        ]
        mean = sum(scores) / size
        variance += (
            (1 - size / population) * size / (size - 1) * sum((s - mean) ** 2 for s in scores)
        )
    variance /= denominator**2
    n = p * (1 - p) / variance if variance > 0 and 0 < p < 1 else len(reviewed)
    z = Z_95
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


@pytest.mark.parametrize("stratify", ["none", "confidence"])
def test_audit_sample_accuracy_matches_a_direct_computation(store_copy, taxonomy, stratify):
    store, run_id = store_copy
    summary = draw_sample(store, run_id, 12, stratify, seed=11)
    again = draw_sample(store, run_id, 12, stratify, seed=11)
    drawn = store.db.execute(
        "SELECT sample_id, list(row_number ORDER BY row_number) FROM review_samples "
        "GROUP BY sample_id ORDER BY sample_id"
    ).fetchall()
    assert drawn[0][1] == drawn[1][1] and summary.rows == again.rows == 12  # seeded
    sample = store.db.execute(
        "SELECT s.row_number, s.stratum, s.stratum_rows, r.source, "
        "json_extract_string(r.labels, '$[0].onet_code') AS label_code "
        "FROM review_samples s JOIN run_rows r USING (run_id, row_number) "
        "WHERE s.sample_id = ? ORDER BY s.row_number",
        [again.sample_id],
    ).df()
    assert sample.groupby("stratum").stratum_rows.first().sum() == 23
    rng = np.random.default_rng(2)
    decisions: dict[int, str] = {}
    for row in sample.itertuples():
        if row.row_number == sample.row_number.iloc[-1]:
            continue  # one sample row left unreviewed: it must not count
        if isinstance(row.label_code, str) and rng.random() < 0.7:
            decision = record_decision(store, taxonomy, run_id, row.row_number, "accept", "ana")
        else:
            decision = record_decision(
                store, taxonomy, run_id, row.row_number, "override", "ana", "11-1021.00"
            )
        decisions[row.row_number] = decision.onet_code
    estimates = {e.domain: e for e in accuracy_estimates(store, run_id)}
    assert estimates["all"].weighted is (stratify != "none")
    assert estimates["all"].reviewed == 11 and estimates["all"].drawn == 12
    for name, domain in (
        ("all", lambda row: True),
        ("embedding", lambda row: row.source == "embedding"),
    ):
        accuracy, low, high = direct_estimate(sample, decisions, domain)
        got = estimates[name]
        assert got.accuracy == pytest.approx(accuracy, abs=1e-12)
        assert (got.low, got.high) == (
            pytest.approx(low, abs=1e-12),
            pytest.approx(high, abs=1e-12),
        )
        assert got.low <= got.accuracy <= got.high


def test_bulk_accept_names_its_count_and_undo_reverts(store_copy, taxonomy):
    store, run_id = store_copy
    mine = ReviewFilter(reviewer="ana")
    record_decision(store, taxonomy, run_id, 2, "flag", "ana", note="odd title")
    rows = bulk_accept_rows(store, run_id, mine)
    assert 2 not in rows and 23 not in rows and len(rows) == 21  # flagged, and no label
    with pytest.raises(InputError, match="the rows changed: 21 would be accepted now, not 30"):
        bulk_accept(store, taxonomy, run_id, mine, expected=30)
    assert bulk_accept(store, taxonomy, run_id, mine, expected=21) == 21
    counts = filter_counts(store, run_id, mine)
    assert counts["reviewed"] == 22 and counts["flagged"] == 1
    assert filter_counts(store, run_id, ReviewFilter(reviewer="ben"))["reviewed"] == 0
    record_decision(store, taxonomy, run_id, 5, "undo", "ana")
    assert filter_counts(store, run_id, mine)["reviewed"] == 21
    assert 5 not in set(decisions_frame(store, run_id)["row_number"])
    with pytest.raises(InputError, match="no decision on row 5 to undo"):
        record_decision(store, taxonomy, run_id, 5, "undo", "ben")
    record_decision(store, taxonomy, run_id, 7, "comment", "ana", note="checked twice")
    (row,) = load_rows(store, run_id, [7], "ana")
    assert row.decision.action == "accept"  # a comment does not change the state
    assert [entry["action"] for entry in row.history] == ["accept", "comment"]


def test_a_store_from_before_the_migration_opens_and_keeps_its_decisions(tmp_path: Path):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as db:  # what an older onet-llm wrote: m001..m003
        db.execute("CREATE TABLE _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
        for migration in MIGRATIONS[:3]:
            migration(db)
            db.execute("INSERT INTO _migrations VALUES (?, now())", [migration.__name__])
        db.execute(
            "INSERT INTO runs VALUES ('r1', 'k', 'label', 'in.csv', 'out.csv', '{}', 'm', 'i', "
            "'done', 1, now(), now())"
        )
        nurse = {"onet_code": "29-1141.00", "onet_title": "Registered Nurses", "score": 0.9}
        practitioner = {"onet_code": "29-1171.00", "onet_title": "NP", "score": 0.7}
        db.execute(
            "INSERT INTO run_rows VALUES ('r1', 1, 'p1', 'Registered Nurse', 'Care.', ?, ?, "
            "'embedding', NULL, NULL)",
            [json.dumps([nurse, practitioner]), json.dumps([nurse])],
        )
        db.execute(
            "INSERT INTO review_decisions (run_id, row_number, posting_id, action, onet_code, "
            "onet_title, previous_onet_code, previous_onet_title, reviewer, note, decided_at) "
            "VALUES ('r1', 1, 'p1', 'override', '29-1171.00', 'Nurse Practitioners', "
            "'29-1141.00', 'Registered Nurses', 'old-auditor', 'before', now())"
        )
    with Store(path) as store:
        applied = [row[0] for row in store.db.execute("SELECT name FROM _migrations").fetchall()]
        assert "m005_review_queues_and_samples" in applied
        (row,), _ = review_rows(store, "r1", ReviewFilter())
        assert (row.decision.onet_code, row.decision.reviewer) == ("29-1171.00", "old-auditor")
        assert row.decision.role == "review" and row.margin == pytest.approx(0.2)
        assert list(decisions_frame(store, "r1")["onet_code"]) == ["29-1171.00"]


def test_assign_and_sample_commands(labelled_store: Path, tmp_path: Path):
    path = tmp_path / "store.duckdb"
    path.write_bytes(labelled_store.read_bytes())
    result = runner.invoke(
        app, ["review", "sample", "--store", str(path), "--n", "8", "--stratify", "confidence"]
    )
    assert result.exit_code == 0, result.output
    assert "sample 1 of 8 rows (seed 0;" in result.output
    result = runner.invoke(
        app,
        [
            "review",
            "assign",
            "--store",
            str(path),
            "--reviewers",
            "ana,ben",
            "--overlap",
            "0.25",
            "--sample",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "8 rows into 2 queues (ana 5, ben 5); 2 rows seen by two reviewers" in result.output
    for args, message in (
        (["assign", "--reviewers", " , "], "needs at least one name"),
        (["assign", "--reviewers", "a,b", "--overlap", "2"], "between 0 and 1"),
        (["sample", "--stratify", "colour"], "--stratify must be one of"),
        (["sample", "--n", "0"], "--n must be at least 1"),
    ):
        result = runner.invoke(app, ["review", *args, "--store", str(path)])
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
