"""The loop label -> review -> export -> eval / train -> label, with the real commands.

A reviewer (scripted here) accepts the run's label where it matches the posting's known
occupation and overrides it to that occupation where it does not; the export is then read by
`eval --data` (which must score the run's own labels exactly as the review found them) and by
training (a few steps, as in tests/train), whose model labels the postings again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.review.decisions import record_decision
from onet_llm.review.queries import ReviewFilter, resolve_run, review_rows
from onet_llm.store import Store
from onet_llm.train.data import read_postings
from onet_llm.train.trainer import TrainingOptions, train
from tests.review.review_support import REPO, label_into_store

runner = CliRunner()


@pytest.mark.slow
def test_label_review_export_eval_train_label(onet_home: Path, tmp_path: Path, taxonomy):
    store_path = label_into_store(tmp_path, onet_home)  # 1. label
    known = pd.read_csv(REPO / "examples" / "postings.csv", dtype=str, keep_default_na=False)
    truth = dict(zip(known["id"], known["onet_code"], strict=True))
    with Store(store_path) as store:  # 2. review
        run_id = resolve_run(store, None).run_id
        rows, _ = review_rows(store, run_id, ReviewFilter(page_size=100))
        right = 0
        for row in rows:
            gold = truth.get(row.posting_id)
            if not gold:
                continue  # the hostile and empty rows have no known occupation
            if row.label and row.label["onet_code"] == gold:
                record_decision(store, taxonomy, run_id, row.row_number, "accept", "ana")
                right += 1
            else:
                record_decision(store, taxonomy, run_id, row.row_number, "override", "ana", gold)

    gold_file = tmp_path / "gold.parquet"  # 3. export
    for out in (gold_file, tmp_path / "gold.csv"):
        result = runner.invoke(
            app, ["review", "export", "--out", str(out), "--store", str(store_path)]
        )
        assert result.exit_code == 0 and "exported 20 reviewed rows" in result.output
        assert len(read_postings(out, taxonomy)) == 20  # what `train --data` reads

    report = tmp_path / "report"  # 4a. eval --data on the gold labels
    result = runner.invoke(
        app,
        ["eval", "--data", str(gold_file), "--out", str(report), "--home", str(onet_home)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((report / "metrics.json").read_text())
    top1 = metrics["modes"]["embedding"]["levels"]["onet"]["top1"]["value"]
    assert top1 == pytest.approx(right / 20)  # the run's labels, scored as the review found

    model = tmp_path / "model"  # 4b. train on them (a few steps, as in tests/train)
    result_train = train(
        TrainingOptions(
            data=(gold_file,),
            output=model,
            batch_size=8,
            max_steps=2,
            limit_pairs=32,
            mining_representation="title",
        ),
        onet_home / "index",
        log=lambda line: None,
    )
    assert result_train.steps == 2 and (model / "model.safetensors").is_file()

    # 5. label again with the new model. Through the Python API with a title-only index: the
    # default index of a new model encodes ~58k titles (minutes on 2 cores), which the packaged
    # index test and the index tests cover; the loop only needs the new model to label.
    from onet_llm.label import LabelOptions, label_file, open_labeler

    labeler, index_key = open_labeler(str(model), onet_home / "index", representation="title")
    relabelled = tmp_path / "again.csv"
    with Store(tmp_path / "store2.duckdb") as store:
        summary = label_file(
            labeler,
            store,
            tmp_path / "postings.csv",
            relabelled,
            LabelOptions(skip_bad_rows=True),
            {"model": labeler.encoder.model_id},
            index_key,
        )
    assert summary.rows == 23 and len(pd.read_csv(relabelled, dtype=str)) == 23
    assert labeler.encoder.model_id.startswith("model@")  # the trained model, not the shipped one
