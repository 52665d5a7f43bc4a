import numpy as np

from onet_llm.shortlist.index import (
    OccupationIndex,
    index_cache_key,
    load_or_build_index,
    normalise_title,
    occupation_entries,
)


def test_shortlist_finds_obvious_occupations(labeler):
    shortlists = labeler.shortlist(["Registered Nurse", "Senior Software Engineer"], ["", ""], 20)
    assert shortlists[0][0].onet_code == "29-1141.00"
    assert "15-1252.00" in [c.onet_code for c in shortlists[1][:3]]
    for shortlist in shortlists:
        codes = [candidate.onet_code for candidate in shortlist]
        assert len(codes) == 20 == len(set(codes))
        scores = [candidate.score for candidate in shortlist]
        assert scores == sorted(scores, reverse=True)


def test_excluded_titles_never_reach_the_index(taxonomy):
    held_out = ["Staff Nurse", "RN (Registered Nurse)"]
    entries = occupation_entries(taxonomy, "alternate_max", held_out)
    kept = {normalise_title(text) for text in entries.texts}
    assert not kept & {normalise_title(title) for title in held_out}
    full = occupation_entries(taxonomy, "alternate_max")
    assert len(full.texts) > len(entries.texts)
    assert set(full.positions) == set(range(len(taxonomy)))  # every occupation is represented


def test_max_aggregation_returns_distinct_occupations_best_first(labeler, taxonomy):
    entries = occupation_entries(taxonomy, "title")
    # Two entries per occupation: its title twice; search must still return distinct occupations.
    doubled_vectors = labeler.encoder.encode(entries.texts + entries.texts)
    positions = np.concatenate([entries.positions, entries.positions])
    index = OccupationIndex(doubled_vectors, positions, len(taxonomy))
    found, scores = index.search(labeler.encoder.encode(["Chief Executives"]), 10)
    assert taxonomy.codes[found[0][0]] == "11-1011.00"
    assert len(set(found[0])) == 10
    assert np.all(np.diff(scores[0]) <= 1e-6)


def test_index_is_cached_on_disk_and_reloads_identically(labeler, taxonomy, tmp_path):
    index = load_or_build_index(labeler.encoder, taxonomy, tmp_path, "title")
    key = index_cache_key(labeler.encoder, taxonomy, "title")
    assert (tmp_path / key / "index.faiss").is_file()
    reloaded = load_or_build_index(labeler.encoder, taxonomy, tmp_path, "title")
    query = labeler.encoder.encode(["Data Scientist"])
    assert np.array_equal(index.search(query, 5)[0], reloaded.search(query, 5)[0])
    # Anything that changes the content changes the key.
    assert key != index_cache_key(labeler.encoder, taxonomy, "title_description")
    assert key != index_cache_key(labeler.encoder, taxonomy, "title", ["Staff Nurse"])
