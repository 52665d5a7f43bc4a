"""Which occupations O*NET lists a title under: what hard-negative mining may never use as a
negative, and what the title-ambiguity benchmark counts as an allowed prediction."""

from onet_llm.taxonomy import load_taxonomy
from onet_llm.train.data import codes_listing_titles


def test_a_title_listed_under_several_occupations_maps_to_all_of_them():
    listed = codes_listing_titles(load_taxonomy())

    assert listed["product engineer"] == {"17-2021.00", "17-2072.00", "17-2141.00", "17-2141.02"}


def test_occupation_titles_are_counted_only_when_asked():
    taxonomy = load_taxonomy()

    without = codes_listing_titles(taxonomy)
    with_titles = codes_listing_titles(taxonomy, include_occupation_titles=True)

    assert "chief executives" not in without
    assert with_titles["chief executives"] == {"11-1011.00"}
    assert all(with_titles[title] >= codes for title, codes in without.items())
