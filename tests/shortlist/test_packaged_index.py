"""The index shipped in the package is the shipped model's, under the key the cache uses, so a
fresh install labels without building one (issue 15, point 1). After changing the shipped
model or the taxonomy, `make index` remakes it; these tests fail until then."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from onet_llm.cli.progress import progress_bar
from onet_llm.shortlist.encoder import Encoder
from onet_llm.shortlist.index import load_index, packaged_indexes_dir
from onet_llm.shortlist.packaged import shipped_index_key
from onet_llm.taxonomy import load_taxonomy


def test_the_packaged_index_matches_the_shipped_model_and_taxonomy():
    key = shipped_index_key()
    folders = sorted(p.name for p in packaged_indexes_dir().iterdir() if p.is_dir())
    assert folders == [key], "stale packaged index: run `make index` and commit onet_llm/indexes"
    metadata = json.loads((packaged_indexes_dir() / key / "metadata.json").read_text())
    assert metadata["model"] == Encoder("default").model_id
    assert metadata["taxonomy"] == load_taxonomy().fingerprint


def test_the_packaged_vectors_come_from_the_shipped_model():
    """Occupation titles find their own occupation: vectors of another model would not."""
    taxonomy = load_taxonomy()
    index = load_index(packaged_indexes_dir() / shipped_index_key())
    sample = taxonomy.occupations[::50]
    positions, _ = index.search(Encoder("default").encode([o.title for o in sample]), 1)
    found = [taxonomy.occupations[row[0]].code for row in positions]
    hits = sum(code == occupation.code for code, occupation in zip(found, sample, strict=True))
    assert hits >= 0.9 * len(sample)


def test_a_fresh_home_labels_without_building_an_index(example_postings: Path, tmp_path: Path):
    home = tmp_path / "fresh-home"
    env = {**os.environ, "ONET_LLM_HOME": str(home), "ONET_LLM_STORE": str(tmp_path / "s.db")}
    output = tmp_path / "out.csv"
    result = subprocess.run(
        [sys.executable, "-m", "onet_llm.cli", "label", str(example_postings), "-o", str(output)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "building" not in result.stderr
    # the default backend's ONNX export is all the fresh cache holds: no index was built
    assert [path.name for path in (home / "index").iterdir()] == ["encoders"]
    assert len(pd.read_csv(output)) == 20


def test_progress_off_a_terminal_is_plain_lines_with_an_eta(capsys):
    with progress_bar("building the occupation index", "titles") as on_progress:
        for done in range(0, 60_001, 2_000):
            on_progress(done, 60_000)
    lines = capsys.readouterr().err.strip().splitlines()
    assert 5 <= len(lines) <= 15  # one per tenth of the work, not one per batch
    assert lines[-1].startswith("building the occupation index: 60,000/60,000 titles (100%)")
    assert all("ETA" in line for line in lines)
