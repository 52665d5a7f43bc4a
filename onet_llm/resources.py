"""Files the package ships beside its code: prompt templates and the evaluation datasets.

Both live at the top of the repository (`prompts/`, `eval/data/`), where people edit and review
them, and are mapped into the package by `pyproject.toml` (`onet_llm.prompts`,
`onet_llm.eval_data`). Finding them through `importlib.resources` rather than a path relative to
the source tree means a wheel install finds exactly what a checkout does; `.ci/run` checks that
on a built wheel.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

# The checkout this package runs from, when it does (editable installs, tests); in a wheel
# install it is site-packages, where git and relative paths simply find nothing.
SOURCE_ROOT = Path(__file__).resolve().parent.parent

PROMPTS_PACKAGE = "onet_llm.prompts"
EVAL_DATA_PACKAGE = "onet_llm.eval_data"


def prompts_folder() -> Traversable:
    """The shipped prompt templates (`<version>.md`)."""
    return resources.files(PROMPTS_PACKAGE)


def eval_data_file(name: str) -> Path:
    """A shipped evaluation file as a real path (pandas and hashing need one).

    The package is installed unzipped (a wheel, or an editable checkout), so the path stays
    valid after `as_file` returns; a zipped install would need the caller to copy it first.
    """
    with resources.as_file(resources.files(EVAL_DATA_PACKAGE) / name) as path:
        return Path(path)
