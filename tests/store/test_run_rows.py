"""Reading a run back in input order, from a real DuckDB file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import onet_llm.store.runs as runs
from onet_llm.store import Store
from onet_llm.types import Candidate, Label, LabelledRow


def rows(numbers: range) -> list[LabelledRow]:
    candidate = Candidate("29-1141.00", "Registered Nurses", 0.9)
    return [
        LabelledRow(
            n, f"p{n}", f"Nurse {n}", "", [candidate], [Label.embedding(candidate)], "embedding"
        )  # fmt: skip
        for n in numbers
    ]


def test_rows_come_back_in_input_order_across_sort_ranges(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(runs, "ROWS_PER_SORT", 7)  # many ranges, one of them partial
    with Store(tmp_path / "store.duckdb") as store:
        run = store.start_run("key", "label", "in.csv", "out.csv", {}, "model", "index")
        # shards committed out of order, as Ray's actors finish them
        store.append_rows(run.run_id, runs.row_records(rows(range(41, 61))), shard=(2, 41))
        store.append_rows(run.run_id, runs.row_records(rows(range(1, 21))), shard=(0, 1))
        store.append_rows(run.run_id, runs.row_records(rows(range(21, 41))), shard=(1, 21))
        back = pd.concat(store.iter_run_rows(run.run_id, batch_size=3), ignore_index=True)
        assert back["row_number"].tolist() == list(range(1, 61))
        assert store.finished_shards(run.run_id) == {0, 1, 2}
        assert store.rows_committed(run.run_id) == 60
        again = runs.labelled_rows(back.iloc[:2])
        assert again[0].labels == [
            Label.embedding(Candidate("29-1141.00", "Registered Nurses", 0.9))
        ]
        assert list(store.iter_run_rows("no-such-run")) == []
