"""What a wheel holds is what a user has: the package list in pyproject.toml must name every
code folder, and the resources mapped in from the top of the repository must be found through
the package. `.ci/run` also builds the wheel and runs the CLI from a fresh install of it."""

import tomllib

from onet_llm.rerank.reranker import PromptTemplate
from onet_llm.resources import eval_data_file, prompts_folder

from .conftest import REPO


def test_every_code_folder_is_a_listed_package():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    code_folders = {
        ".".join(path.parent.relative_to(REPO).parts)
        for path in (REPO / "onet_llm").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert code_folders - listed == set()


def test_prompts_and_eval_data_come_from_the_top_level_folders():
    assert {entry.name for entry in prompts_folder().iterdir()} >= {"rerank_v1.md"}
    assert str(prompts_folder()) == str(REPO / "prompts")
    assert eval_data_file("dev_ads.csv") == REPO / "eval" / "data" / "dev_ads.csv"
    assert PromptTemplate.load("rerank_v1").system
