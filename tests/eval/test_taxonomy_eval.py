"""Issue 13: the whole-taxonomy evaluation data, the noise process and the fusion index."""

import random

import numpy as np
import pandas as pd
import pytest

from onet_llm.eval.datasets import BUILTIN_DATASETS, load_dataset
from onet_llm.resources import eval_data_file
from onet_llm.shortlist.fusion import FusionIndex, best_entry_scores, centroid_vectors
from onet_llm.shortlist.index import normalise_title, occupation_entries
from onet_llm.train.splits import split_reported_titles, split_reported_titles_with_validation
from onet_llm.train.title_noise import (
    TRANSFORMATIONS,
    applicable,
    apply_transformations,
    noise_title,
    noise_titles,
)

TITLES = [
    "Registered Nurse",
    "Senior Software Engineer",
    "Maintenance Technician",
    "Customer Service Representative",
    "Human Resources Manager",
]


def test_same_seed_gives_the_same_rewrites_and_another_seed_differs():
    first = noise_titles(TITLES * 20, seed=7)
    assert first == noise_titles(TITLES * 20, seed=7)
    assert [row.title for row in first] != [row.title for row in noise_titles(TITLES * 20, seed=8)]
    # A title's rewrite does not depend on what else is in the list.
    assert noise_titles(TITLES[:2], seed=7) == first[:2]
    assert all(row.transformations for row in first)  # every title is rewritten somehow


@pytest.mark.parametrize("name", TRANSFORMATIONS)
def test_each_transformation_changes_a_title_it_applies_to(name):
    title = "Senior Maintenance Technician and Manager"
    assert name in applicable(title)
    changed = [
        apply_transformations(title, [name], random.Random(seed)) != title for seed in range(20)
    ]
    assert all(changed)


def test_transformations_do_what_they_say():
    rng = random.Random(0)
    assert apply_transformations("Operations Manager", ["abbreviation"], rng) in {
        "Ops Manager",
        "Operations Mgr",
        "Ops Mgr",
    }
    assert apply_transformations("Operations Manager", ["case"], random.Random(1)) in {
        "operations manager",
        "OPERATIONS MANAGER",
    }
    employer = apply_transformations("Welder", ["employer"], random.Random(2))
    assert employer.startswith("Welder") and len(employer) > len("Welder ")
    requisition = apply_transformations("Welder", ["requisition"], random.Random(3))
    assert any(ch.isdigit() for ch in requisition)
    assert "abbreviation" not in applicable("Welder")  # nothing to shorten
    assert "typo" not in applicable("Cook")  # no word of five letters


def test_every_transformation_occurs_in_the_shipped_set():
    written = pd.read_csv(eval_data_file("titles_as_written.csv"), dtype=str, keep_default_na=False)
    used = set(written["transformations"].str.split("+").explode())
    assert used == set(TRANSFORMATIONS)
    assert (written["title"] != written["source_title"]).mean() > 0.99


def test_validation_is_carved_from_train_and_test_is_unchanged(taxonomy):
    reported = taxonomy.reported_titles
    before = split_reported_titles(reported)
    after = split_reported_titles_with_validation(reported)
    assert ((before == "test") == (after == "test")).all()
    assert set(after[before == "train"]) == {"train", "validation"}
    assert 0.14 < (after == "validation").mean() < 0.18
    keys = reported["title"].map(normalise_title)
    sides = pd.DataFrame({"key": keys, "split": after}).groupby("key")["split"].nunique()
    assert (sides == 1).all()  # one title, one side
    shipped = pd.read_csv(eval_data_file("reported_titles.csv"), dtype=str, keep_default_na=False)
    assert list(shipped["split"]) == list(after)


def test_noisy_eval_titles_come_only_from_held_out_titles(taxonomy):
    written = pd.read_csv(eval_data_file("titles_as_written.csv"), dtype=str, keep_default_na=False)
    reported = pd.read_csv(eval_data_file("reported_titles.csv"), dtype=str, keep_default_na=False)
    held_out = reported[reported["split"] != "train"]
    assert sorted(written["source_title"]) == sorted(held_out["title"])
    assert set(written["split"]) == {"validation", "test"}


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASETS))
def test_every_dataset_loads_by_name_and_excludes_its_own_titles(name, taxonomy):
    dataset = load_dataset(name, taxonomy)
    assert len(dataset.frame) > 0
    if name.startswith("titles-as-written"):
        written = pd.read_csv(eval_data_file("titles_as_written.csv"), dtype=str)
        split = written[written["split"] == dataset.split]
        assert sorted(dataset.excluded_titles) == sorted(split["source_title"])
    elif name.startswith("reported-titles"):
        assert sorted(dataset.excluded_titles) == sorted(dataset.frame["title"])
    else:
        assert dataset.excluded_titles == []


def test_fusion_scores_are_exact_and_weighted(labeler, taxonomy, tmp_path):
    entries = occupation_entries(taxonomy, "title_blend")
    n = len(taxonomy)
    texts = entries.texts[:-n][:500] + entries.texts[-n:]
    positions = np.concatenate([entries.positions[:-n][:500], np.arange(n)])
    vectors = labeler.encoder.encode(texts)
    entry_vectors = np.concatenate([vectors[:500], vectors[-n:]])  # every occupation has its title
    centroids = centroid_vectors(entry_vectors, positions, vectors[-n:])
    index = FusionIndex(entry_vectors, positions, centroids, 0.5)
    stored = entry_vectors.astype(np.float16).astype(np.float32)  # scored as saved
    query = labeler.encoder.encode(["Registered Nurse, night shift"])
    found, scores = index.search(query, 20)
    assert taxonomy.codes[found[0][0]] == "29-1141.00"
    assert len(set(found[0])) == 20 and np.all(np.diff(scores[0]) <= 1e-6)
    brute = np.array(
        [max(float(query[0] @ vector) for vector in stored[positions == p]) for p in found[0][:3]]
    )
    exact = best_entry_scores(query, index.entry_vectors, index.starts)[0][found[0][:3]]
    assert np.allclose(brute, exact, atol=1e-5)
    expected = (
        0.5 * (query @ centroids.T)[0][found[0]]
        + 0.5 * best_entry_scores(query, index.entry_vectors, index.starts)[0][found[0]]
    )
    assert np.allclose(scores[0], expected, atol=1e-5)
    # The index that was just built scores exactly as the one loaded from its files, so a rerun
    # ranks near-ties the same (and asks the LLM the same prompts).
    index.save(tmp_path / "fusion", {})
    reloaded = FusionIndex.load(tmp_path / "fusion", 0.5)
    assert np.array_equal(index.scores(query), reloaded.scores(query))


def test_noise_is_applied_per_title_not_in_place():
    rng = random.Random(5)
    row = noise_title("Accountant", rng)
    assert row.source_title == "Accountant" and row.title != "Accountant"
