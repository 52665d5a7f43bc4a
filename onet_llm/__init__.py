"""onet-llm: code job postings to O*NET-SOC occupations.

Stage 1 (always on) embeds each posting and shortlists occupations from a FAISS index over
the O*NET 30.1 taxonomy; stage 2 (optional) lets an LLM pick and rank the final labels.

The Python API (`onet_llm.api`), loaded on first use so that `import onet_llm` stays cheap:

- `onet_llm.search(titles, size=10) -> list[SearchResult]`
- `onet_llm.label_dataframe(frame, title_column="title", top_k=5, ...) -> DataFrame`
- `onet_llm.Labeler(model="default", llm=False)`: the same two as methods, model loaded once.
"""

from typing import TYPE_CHECKING, Any

from onet_llm.errors import InputError, OnetLLMError

if TYPE_CHECKING:
    from onet_llm.api import Labeler, Match, SearchResult, label_dataframe, search

__all__ = [
    "ONET_ATTRIBUTION",
    "InputError",
    "Labeler",
    "Match",
    "OnetLLMError",
    "SearchResult",
    "label_dataframe",
    "search",
]
_API = {"Labeler", "Match", "SearchResult", "label_dataframe", "search"}

__version__ = "0.1.0"

ONET_ATTRIBUTION = (
    "This product includes information from the O*NET 30.1 Database by the U.S. Department "
    "of Labor, Employment and Training Administration (USDOL/ETA). Used under the CC BY 4.0 "
    "license. O*NET(R) is a trademark of USDOL/ETA."
)


def __getattr__(name: str) -> Any:
    if name in _API:
        from onet_llm import api

        return getattr(api, name)
    raise AttributeError(f"module 'onet_llm' has no attribute {name!r}")
