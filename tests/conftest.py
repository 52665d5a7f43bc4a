"""Shared fixtures: the real taxonomy, the real base model and a real FAISS index.

The index cache lives in a folder that survives test sessions (it is keyed by model, taxonomy
and representation, so reuse is safe); stores and outputs are per test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_HOME = Path(os.environ.get("ONET_LLM_TEST_HOME", REPO / ".pytest_cache" / "onet-llm-home"))


@pytest.fixture(scope="session")
def onet_home() -> Path:
    TEST_HOME.mkdir(parents=True, exist_ok=True)
    return TEST_HOME


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, onet_home: Path, tmp_path: Path):
    """Every test gets the shared index cache but its own store, and no user .env."""
    monkeypatch.setenv("ONET_LLM_HOME", str(onet_home))
    monkeypatch.setenv("ONET_LLM_STORE", str(tmp_path / "store.duckdb"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def taxonomy():
    from onet_llm.taxonomy import load_taxonomy

    return load_taxonomy()


@pytest.fixture(scope="session")
def labeler(onet_home: Path):
    from onet_llm.label import open_labeler

    labeler, _ = open_labeler("default", onet_home / "index")
    return labeler


@pytest.fixture
def example_postings() -> Path:
    return REPO / "examples" / "postings.csv"
