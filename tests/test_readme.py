"""The README is for users first (issue 15, point 8): it starts with the two set-up commands,
covers the everyday tasks in order, and links only to files inside the repository."""

from __future__ import annotations

import re

from .conftest import REPO

README = (REPO / "README.md").read_text()


def test_readme_starts_with_setup_and_covers_the_user_tasks_first():
    assert README.startswith("# onet-llm\n\n```bash\nmake demo ")
    assert README.splitlines()[4].startswith("make test ")
    headings = [line for line in README.splitlines() if line.startswith("## ")]
    order = [
        "## Label a file",
        "## What accuracy to expect",
        "## Cost per 1,000 postings",
        "## Reviewing a run",
        "## Evaluation",
        "## Python API",
        "## Research notes",
    ]
    positions = [next(i for i, h in enumerate(headings) if h.startswith(o)) for o in order]
    assert positions == sorted(positions)
    for column in ("score_1..K", "soc_code_1..K", "major_group_1", "Not a probability"):
        assert column in README


def test_readme_links_stay_inside_the_repository():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if target.startswith("http"):
            continue
        assert not target.startswith(".."), target
        assert (REPO / target).exists(), target
