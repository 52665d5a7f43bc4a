"""Reading postings and writing labels, by extension, in chunks, atomically."""

from pathlib import Path

import pandas as pd
import pytest

from onet_llm.errors import InputError
from onet_llm.tables import TableWriter, iter_table_chunks, parquet_rows, table_format

ROWS = pd.DataFrame({"id": ["007", "2", "3"], "title": ["Nurse", "Chef", ""], "n": [1, 2, 3]})


@pytest.mark.parametrize("extension", ["csv", "parquet", "jsonl"])
def test_every_format_round_trips_as_strings_in_chunks(tmp_path: Path, extension: str):
    path = tmp_path / f"rows.{extension}"
    writer = TableWriter(path)
    frame = ROWS.astype(str)
    writer.write(frame.to_dict("records") if extension == "jsonl" else frame)
    assert not path.exists()  # written under a hidden name until committed
    writer.commit()
    chunks = list(iter_table_chunks(path, chunk_size=2))
    assert [len(chunk) for chunk in chunks] == [2, 1]
    read = pd.concat(chunks, ignore_index=True)
    assert list(read["id"]) == ["007", "2", "3"] and list(read["n"]) == ["1", "2", "3"]
    assert parquet_rows(path) == (3 if extension == "parquet" else None)


def test_an_aborted_writer_leaves_nothing(tmp_path: Path):
    writer = TableWriter(tmp_path / "out.csv")
    writer.write(ROWS)
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_problems_are_one_line_input_errors(tmp_path: Path):
    with pytest.raises(InputError, match="unknown extension"):
        table_format(tmp_path / "rows.xls")
    with pytest.raises(InputError, match="no such file"):
        next(iter_table_chunks(tmp_path / "missing.csv"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "Nurse"}\nnot json\n')
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        list(iter_table_chunks(bad))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        next(iter_table_chunks(empty))
