from onet_llm import ONET_ATTRIBUTION
from onet_llm.postings import OCCUPATION_COUNT
from onet_llm.taxonomy import is_onet_code, soc_code

from .conftest import REPO


def test_taxonomy_has_all_onet_30_1_occupations(taxonomy):
    assert len(taxonomy) == 1016 == OCCUPATION_COUNT  # the bound on --shortlist-size
    assert all(is_onet_code(code) for code in taxonomy.codes)
    assert taxonomy.codes == sorted(taxonomy.codes)
    assert taxonomy.title("15-1252.00") == "Software Developers"
    assert len(taxonomy.alternate_titles) == 56505
    assert len(taxonomy.reported_titles) == 7955
    assert set(taxonomy.alternate_titles["onet_code"]) == set(taxonomy.codes)
    assert taxonomy.job_zones["29-1141.00"] in range(1, 6)
    assert len(taxonomy.tasks) == 18796


def test_soc_hierarchy_is_read_off_the_code():
    code = "15-1252.00"
    assert [soc_code(code, level) for level in ("major", "minor", "broad", "detailed", "onet")] == [
        "15",
        "15-1",
        "15-125",
        "15-1252",
        "15-1252.00",
    ]


def test_title_search_finds_codes_titles_and_alternate_titles(taxonomy):
    assert taxonomy.search_titles("15-1252")[0].code == "15-1252.00"
    assert "29-1141.00" in [o.code for o in taxonomy.search_titles("registered nurse")]
    # "RN" style alternate titles reach occupations whose own title does not contain the word.
    assert "43-4131.00" in [o.code for o in taxonomy.search_titles("loan processor", limit=50)]


def test_attribution_is_shipped_in_readme():
    readme = " ".join((REPO / "README.md").read_text().replace("\\", "").split())
    assert ONET_ATTRIBUTION.split("(USDOL/ETA)")[0] in readme
    assert "CC BY 4.0 license" in readme
