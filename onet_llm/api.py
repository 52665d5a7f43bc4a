"""The Python API: `onet_llm.Labeler`, `onet_llm.label_dataframe` and `onet_llm.search`.

The same pipeline as `onet-llm label` (shortlist from the shipped index, optional LLM rerank),
for a DataFrame in memory rather than a file. A `Labeler` loads the model once and is reused
across calls; the module-level functions share one default `Labeler` per model and home.

    >>> import onet_llm
    >>> onet_llm.search(["Registered Nurse"], size=3)[0].matches[0].onet_code
    '29-1141.00'
    >>> labels = onet_llm.label_dataframe(pd.DataFrame({"title": ["Staff Accountant"]}))
    >>> labels[["title", "onet_code_1", "soc_code_1", "score_1"]]

`score` is the cosine similarity of the posting and the occupation (higher is closer; it is
not a probability): see the README for the accuracy to expect at each score.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from onet_llm.errors import InputError
from onet_llm.taxonomy import soc_code

if TYPE_CHECKING:
    import pandas as pd

    from onet_llm.settings import Settings


@dataclass(frozen=True)
class Match:
    """One occupation for a title, best first: `rank` 1 is the top match."""

    rank: int
    onet_code: str  # O*NET-SOC 30.1, 8 digits: 29-1141.00
    onet_title: str
    soc_code: str  # SOC 2018, 6 digits: 29-1141
    score: float  # cosine similarity, not a probability

    def as_record(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "onet_code": self.onet_code,
            "onet_title": self.onet_title,
            "soc_code": self.soc_code,
            "score": self.score,
        }


@dataclass(frozen=True)
class SearchResult:
    """The shortlist of one title (and optional body)."""

    title: str
    matches: list[Match]

    def as_record(self) -> dict[str, Any]:
        return {"title": self.title, "matches": [match.as_record() for match in self.matches]}


def _match(rank: int, candidate) -> Match:
    code = candidate.onet_code
    return Match(rank, code, candidate.onet_title, soc_code(code, "detailed"), candidate.score)


class Labeler:
    """Labels postings with O*NET occupations; load once, call many times.

    `model` is 'default' (the shipped fine-tuned model), 'base', or a model folder. `llm=True`
    reranks each shortlist with the LLM configured by the environment (OPENAI_API_KEY,
    ONET_LLM_MODEL, OPENAI_BASE_URL: see .env.example), caching calls in the store.
    `encoder_backend` is auto, torch, onnx or onnx-int8 (default $ONET_LLM_ENCODER_BACKEND or auto:
    fp32 ONNX where it can run, else torch).
    """

    def __init__(
        self,
        model: str = "default",
        *,
        home: Path | str | None = None,
        llm: bool = False,
        llm_model: str | None = None,
        base_url: str | None = None,
        store: Path | str | None = None,
        encoder_backend: str | None = None,
    ) -> None:
        from onet_llm.label import open_labeler
        from onet_llm.settings import Settings

        self.settings: Settings = Settings.load(
            home=Path(home) if home else None,
            embedding_model=model,
            encoder_backend=encoder_backend,
            store_path=Path(store) if store else None,
            llm_model=llm_model,
            openai_base_url=base_url,
        )
        self.llm = llm
        self._labeler, self.index_key = open_labeler(
            self.settings.embedding_model,
            self.settings.index_cache_dir,
            encoder_options=self.settings.encoder_options(),
        )

    def search(
        self, titles: str | Sequence[str], *, bodies: Sequence[str] | None = None, size: int = 10
    ) -> list[SearchResult]:
        """The best `size` occupations for each title, best first (embedding only)."""
        titles = [titles] if isinstance(titles, str) else [str(title) for title in titles]
        bodies = list(bodies) if bodies is not None else [""] * len(titles)
        if size < 1:
            raise InputError(f"size must be at least 1, got {size}")
        shortlists = self._labeler.shortlist(titles, bodies, size)
        return [
            SearchResult(title, [_match(rank, c) for rank, c in enumerate(shortlist, start=1)])
            for title, shortlist in zip(titles, shortlists, strict=True)
        ]

    def label_dataframe(
        self,
        frame: pd.DataFrame,
        *,
        title_column: str = "title",
        body_column: str = "body",
        id_column: str | None = None,
        top_k: int = 5,
        shortlist_size: int = 20,
        keep_columns: Literal["all"] | Iterable[str] | None = "all",
        allow_duplicate_ids: bool = False,
        llm: bool | None = None,
    ) -> pd.DataFrame:
        """One row per input row, in order, with the columns of a `label` output file: id,
        title, the kept input columns (all by default), `onet_code_k`, `onet_title_k`,
        `score_k`, `soc_code_k` for k = 1..top_k, `major_group_1`, `source` and `error`.
        Rows with neither title nor body get source='error' rather than failing the call."""
        import pandas as pd

        from onet_llm.postings import LabelOptions, resolve_columns

        options = LabelOptions(
            top_k=top_k,
            shortlist_size=shortlist_size,
            id_column=id_column,
            title_column=title_column,
            body_column=body_column,
            skip_bad_rows=True,
            keep_columns=() if keep_columns in (None, "all") else tuple(keep_columns),
            keep_all_columns=keep_columns == "all",
            allow_duplicate_ids=allow_duplicate_ids,
        )
        frame = frame.reset_index(drop=True)
        frame.columns = [str(column) for column in frame.columns]
        options = resolve_columns(frame.columns, Path("DataFrame"), options)
        text = frame.astype(object).where(frame.notna(), "").astype(str)
        return self._label_text_frame(text, options, self.llm if llm is None else llm, pd)

    def _label_text_frame(self, text, options, llm: bool, pd) -> pd.DataFrame:
        from onet_llm.output import output_records
        from onet_llm.postings import DuplicateIds

        DuplicateIds(options).check(text, 1)
        rows = self._labeler.label_chunk(text, 1, options) if len(text) else []
        if llm and rows:
            rows = self._rerank(rows, options.top_k)
        table = pd.DataFrame(
            {
                "posting_id": [row.posting_id for row in rows],
                "title": [row.title for row in rows],
                "source": [row.source for row in rows],
                "error": [row.error for row in rows],
            }
        )
        labels = [[label.as_record() for label in row.labels or []] for row in rows]
        kept = [row.kept or {} for row in rows]
        return output_records(table, labels, kept, options.top_k, "csv")

    def _rerank(self, rows, top_k: int):
        from onet_llm.label import rerank_rows
        from onet_llm.rerank.reranker import Reranker
        from onet_llm.store import Store

        with Store(self.settings.resolved_store_path, shared=True) as store:
            reranker = Reranker(self.settings, store, self._labeler.taxonomy)
            return rerank_rows(rows, reranker, top_k, None)


_DEFAULT_LABELERS: dict[tuple[str, str | None], Labeler] = {}


def default_labeler(model: str = "default", home: Path | str | None = None) -> Labeler:
    """One `Labeler` per model and home for the module-level functions."""
    key = (model, str(home) if home else None)
    if key not in _DEFAULT_LABELERS:
        _DEFAULT_LABELERS[key] = Labeler(model, home=home)
    return _DEFAULT_LABELERS[key]


def search(
    titles: str | Sequence[str],
    *,
    bodies: Sequence[str] | None = None,
    size: int = 10,
    model: str = "default",
    home: Path | str | None = None,
) -> list[SearchResult]:
    """`Labeler(model).search(titles)` with a Labeler kept for the next call."""
    return default_labeler(model, home).search(titles, bodies=bodies, size=size)


def label_dataframe(
    frame: pd.DataFrame, *, model: str = "default", home: Path | str | None = None, **options: Any
) -> pd.DataFrame:
    """`Labeler(model).label_dataframe(frame, **options)` with a Labeler kept for the next
    call (LLM rerank: make a `Labeler(llm=True)`)."""
    return default_labeler(model, home).label_dataframe(frame, **options)
