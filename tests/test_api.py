"""The public Python API, used only through `onet_llm.*` (issue 15, point 4)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

import onet_llm


def test_importing_onet_llm_loads_no_model_libraries():
    code = (
        "import sys, onet_llm; heavy = {'torch', 'sentence_transformers', 'pandas', 'faiss'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_search_returns_typed_matches_best_first():
    results = onet_llm.search(["Registered Nurse", "Staff Accountant"], size=3)
    assert [r.title for r in results] == ["Registered Nurse", "Staff Accountant"]
    nurse = results[0].matches
    assert isinstance(nurse[0], onet_llm.Match) and nurse[0].rank == 1
    assert nurse[0].onet_code.startswith("29-1141") and nurse[0].soc_code == "29-1141"
    assert [m.score for m in nurse] == sorted((m.score for m in nurse), reverse=True)
    assert results[1].matches[0].onet_code.startswith("13-2011")  # Accountants and Auditors
    assert results[0].as_record()["matches"][0]["onet_code"] == nurse[0].onet_code


def test_label_dataframe_keeps_the_frame_and_adds_label_columns():
    frame = pd.DataFrame(
        {"Job Title": ["Registered Nurse", "", "Forklift Operator"], "region": ["N", "S", "E"]},
        index=[10, 11, 12],
    )
    labels = onet_llm.label_dataframe(frame, top_k=2)
    assert len(labels) == 3 and list(labels["region"]) == ["N", "S", "E"]
    assert list(labels["title"]) == ["Registered Nurse", "", "Forklift Operator"]
    assert list(labels["source"]) == ["embedding", "error", "embedding"]
    assert labels.loc[0, "onet_code_1"].startswith("29-1141")
    assert labels.loc[0, "soc_code_1"] == labels.loc[0, "onet_code_1"][:7]
    assert labels.loc[2, "major_group_1"] == "53-0000"  # Transportation and Material Moving
    assert {"score_1", "score_2", "onet_title_2"} <= set(labels.columns)


def test_a_labeler_is_reused_and_rejects_duplicate_ids():
    labeler = onet_llm.Labeler()
    first = labeler.label_dataframe(pd.DataFrame({"title": ["Welder"]}), keep_columns=None)
    second = labeler.search("Welder", size=1)[0].matches[0]
    assert first.loc[0, "onet_code_1"] == second.onet_code
    duplicated = pd.DataFrame({"id": ["7", "7"], "title": ["Welder", "Cook"]})
    with pytest.raises(onet_llm.InputError, match="row 2: id '7' is already used by row 1"):
        labeler.label_dataframe(duplicated)
    allowed = labeler.label_dataframe(duplicated, allow_duplicate_ids=True)
    assert list(allowed["id"]) == ["7", "7"]
