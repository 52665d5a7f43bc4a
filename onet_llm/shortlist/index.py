"""The shortlist: a FAISS index over occupation representations, cached on disk.

One vector per occupation is not enough: an occupation is better described by the many titles
people actually use for it. A *representation* says which texts stand for an occupation and how
their vectors become scores:

- `title`: the occupation title alone.
- `title_description`: title and O*NET description in one text.
- `alternate_mean`: the mean of the vectors of the title, alternate titles and reported titles
  (one renormalised vector per occupation).
- `alternate_max`: every title is its own entry; an occupation scores its best entry.
- `title_blend`: `TITLE_BLEND_WEIGHT` x the title's vector + the rest x the `alternate_mean`
  vector, renormalised. The fine-tuned model pulls postings towards the occupation *title*
  (its training positive), while the mean of all titles keeps the many ways people name the
  job; the blend keeps both.

- `fusion` (the default): `title_blend`'s centroid score plus the occupation's best single
  title score, exact for every occupation (`fusion.py`).

Which is best is measured, not assumed: see `eval/representations_base.md` and
`eval/representations_finetuned.md` (written by `benchmarks/representations.py`) and, over the
whole taxonomy, `eval/representations_taxonomy.md` (`benchmarks/taxonomy_representations.py`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from onet_llm.shortlist.encoder import Encoder
from onet_llm.taxonomy import Taxonomy

Representation = Literal[
    "title", "title_description", "alternate_mean", "alternate_max", "title_blend", "fusion"
]
REPRESENTATIONS: tuple[str, ...] = (
    "title",
    "title_description",
    "alternate_mean",
    "alternate_max",
    "title_blend",
    "fusion",  # title_blend score + best single title score: shortlist/fusion.py
)
# Share of the title's vector in `title_blend`, chosen on the validation ads (never on test):
# see eval/representations_finetuned.md.
TITLE_BLEND_WEIGHT = 0.75
# The default since issue 13: centroid + best exemplar beat the centroid alone on whole-taxonomy
# validation (eval/representations_taxonomy.md).
DEFAULT_REPRESENTATION: Representation = "fusion"
INDEX_FORMAT_VERSION = 1
# Texts encoded between two progress reports while an index is built.
BUILD_BATCH = 2048
Progress = Callable[[int, int | None], None]


def packaged_indexes_dir() -> Path:
    """Prebuilt indexes shipped in the package, one folder per cache key (`make index`
    rebuilds the one for the shipped model), so a fresh install never builds one."""
    return Path(str(resources.files("onet_llm") / "indexes"))


def normalise_title(title: str) -> str:
    """Key for "the same title": case and surrounding space do not make a new title."""
    return " ".join(title.lower().split())


@dataclass(frozen=True)
class IndexEntries:
    """Texts that stand for occupations: entry i stands for occupation `positions[i]`."""

    texts: list[str]
    positions: np.ndarray  # int64, one occupation position per entry
    aggregation: Literal["mean", "max", "single", "title_blend"]


def occupation_entries(
    taxonomy: Taxonomy,
    representation: Representation,
    excluded_titles: Iterable[str] = (),
) -> IndexEntries:
    """Which texts stand for each occupation under `representation`.

    `excluded_titles` are dropped wherever they occur (compared case-insensitively), so that an
    evaluation on held-out titles never finds them in the index.
    """
    if representation == "title":
        texts = [occupation.title for occupation in taxonomy.occupations]
        return IndexEntries(texts, np.arange(len(texts)), "single")
    if representation == "title_description":
        texts = [f"{o.title}. {o.description}" for o in taxonomy.occupations]
        return IndexEntries(texts, np.arange(len(texts)), "single")
    if representation not in REPRESENTATIONS:
        raise ValueError(f"unknown representation {representation!r}")
    excluded = {normalise_title(title) for title in excluded_titles}
    pairs: dict[tuple[int, str], str] = {}
    for occupation in taxonomy.occupations:
        pairs[(taxonomy.position[occupation.code], normalise_title(occupation.title))] = (
            occupation.title
        )
    for table in (taxonomy.alternate_titles, taxonomy.reported_titles):
        for code, title in zip(table["onet_code"], table["title"], strict=True):
            key = normalise_title(title)
            if key not in excluded:
                pairs.setdefault((taxonomy.position[code], key), title)
    ordered = sorted(pairs.items())
    texts = [title for _, title in ordered]
    positions = np.array([position for (position, _), _ in ordered], dtype=np.int64)
    if representation == "title_blend":
        # The occupation titles go last: from_entries finds them as the final n_occupations rows.
        texts += [occupation.title for occupation in taxonomy.occupations]
        positions = np.concatenate([positions, np.arange(len(taxonomy.occupations))])
        return IndexEntries(texts, positions, "title_blend")
    aggregation = "mean" if representation == "alternate_mean" else "max"
    return IndexEntries(texts, positions, aggregation)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


class OccupationIndex:
    """FAISS inner-product index whose search returns occupations, best first.

    With `max` aggregation the FAISS index holds one vector per entry and an occupation scores
    its best entry; otherwise it holds one vector per occupation.
    """

    def __init__(self, vectors: np.ndarray, positions: np.ndarray, n_occupations: int) -> None:
        self.positions = positions.astype(np.int64)
        self.n_occupations = n_occupations
        self.faiss_index = faiss.IndexFlatIP(vectors.shape[1])
        self.faiss_index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    @classmethod
    def from_entries(
        cls, entries: IndexEntries, vectors: np.ndarray, n_occupations: int
    ) -> OccupationIndex:
        if entries.aggregation not in {"mean", "title_blend"}:
            return cls(vectors, entries.positions, n_occupations)
        titles = None
        if entries.aggregation == "title_blend":
            titles = vectors[-n_occupations:]
            vectors, positions = vectors[:-n_occupations], entries.positions[:-n_occupations]
        else:
            positions = entries.positions
        sums = np.zeros((n_occupations, vectors.shape[1]), dtype=np.float64)
        np.add.at(sums, positions, vectors)
        means = _unit_rows(sums)
        if titles is not None:
            means = _unit_rows(TITLE_BLEND_WEIGHT * titles + (1 - TITLE_BLEND_WEIGHT) * means)
        return cls(means.astype(np.float32), np.arange(n_occupations), n_occupations)

    @property
    def entry_count(self) -> int:
        return int(self.faiss_index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k occupation positions and scores for each query row, best first."""
        k = min(k, self.n_occupations)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.entry_count == self.n_occupations:
            scores, entry_ids = self.faiss_index.search(queries, k)
            return self.positions[entry_ids], scores
        return self._search_max(queries, k)

    def _search_max(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        depth = min(self.entry_count, max(64, k * 40))
        scores, entry_ids = self.faiss_index.search(queries, depth)
        out_positions = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row in range(len(queries)):
            seen: dict[int, float] = {}
            for entry, score in zip(entry_ids[row], scores[row], strict=True):
                position = int(self.positions[entry])
                if position not in seen:
                    seen[position] = float(score)
                    if len(seen) == k:
                        break
            for column, (position, score) in enumerate(seen.items()):
                out_positions[row, column] = position
                out_scores[row, column] = score
        return out_positions, out_scores

    def save(self, folder: Path, metadata: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / "index.faiss.tmp"
        faiss.write_index(self.faiss_index, str(temporary))
        np.save(folder / "positions.npy", self.positions)
        (folder / "metadata.json").write_text(
            json.dumps({**metadata, "n_occupations": self.n_occupations}, indent=2)
        )
        temporary.rename(folder / "index.faiss")  # written last: its presence means complete

    def to_payload(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The index as plain arrays, for the Ray object store (a FAISS index is not picklable):
        workers of a cluster get it from the driver instead of building or finding it."""
        return faiss.serialize_index(self.faiss_index), self.positions, self.n_occupations

    @classmethod
    def from_payload(cls, payload: tuple[np.ndarray, np.ndarray, int]) -> OccupationIndex:
        index = cls.__new__(cls)
        serialized, index.positions, index.n_occupations = payload
        index.faiss_index = faiss.deserialize_index(serialized)
        return index

    @classmethod
    def load(cls, folder: Path) -> OccupationIndex:
        index = cls.__new__(cls)
        index.faiss_index = faiss.read_index(str(folder / "index.faiss"))
        index.positions = np.load(folder / "positions.npy")
        index.n_occupations = json.loads((folder / "metadata.json").read_text())["n_occupations"]
        return index


def index_cache_key(
    encoder: Encoder,
    taxonomy: Taxonomy,
    representation: str,
    excluded_titles: Iterable[str] = (),
) -> str:
    """Everything that changes the index's content: model, taxonomy, representation, exclusions."""
    excluded = sorted({normalise_title(title) for title in excluded_titles})
    digest = hashlib.sha256(
        json.dumps(
            [
                INDEX_FORMAT_VERSION,
                encoder.fingerprint,
                taxonomy.fingerprint,
                representation,
                excluded,
            ]
        ).encode()
    ).hexdigest()[:16]
    return f"{representation}-{digest}"


def build_index(
    encoder: Encoder,
    taxonomy: Taxonomy,
    representation: Representation = DEFAULT_REPRESENTATION,
    excluded_titles: Iterable[str] = (),
    on_progress: Progress | None = None,
) -> OccupationIndex:
    """Encode every text that stands for an occupation (tens of thousands of titles: minutes
    on a CPU), reporting `on_progress(texts_done, texts_total)` as it goes."""
    if representation == "fusion":
        from onet_llm.shortlist.fusion import build_fusion_index

        return build_fusion_index(encoder, taxonomy, excluded_titles, on_progress=on_progress)
    entries = occupation_entries(taxonomy, representation, excluded_titles)
    total = len(entries.texts)
    parts = []
    for start in range(0, total, BUILD_BATCH):
        parts.append(encoder.encode(entries.texts[start : start + BUILD_BATCH]))
        if on_progress:
            on_progress(min(start + BUILD_BATCH, total), total)
    vectors = np.concatenate(parts) if parts else encoder.encode([])
    return OccupationIndex.from_entries(entries, vectors, len(taxonomy))


def is_complete_index(folder: Path) -> bool:
    """A saved FAISS index, or a saved `fusion` index (its `complete` marker is written last)."""
    return (folder / "index.faiss").is_file() or (folder / "complete").is_file()


def load_index(folder: Path):
    """A saved index of either kind: `OccupationIndex` (FAISS) or `FusionIndex`."""
    if (folder / "index.faiss").is_file():
        return OccupationIndex.load(folder)
    from onet_llm.shortlist.fusion import FusionIndex

    return FusionIndex.load(folder)


def find_index(cache_dir: Path, key: str) -> Path | None:
    """The folder holding the index of `key`: the user's cache, else the package."""
    for folder in (cache_dir / key, packaged_indexes_dir() / key):
        if is_complete_index(folder):
            return folder
    return None


def load_or_build_index(
    encoder: Encoder,
    taxonomy: Taxonomy,
    cache_dir: Path,
    representation: Representation = DEFAULT_REPRESENTATION,
    excluded_titles: Iterable[str] = (),
    on_progress: Progress | None = None,
) -> OccupationIndex:
    """The index from the cache or the package, building and saving it first if neither has
    it (another model, taxonomy or representation)."""
    excluded_titles = list(excluded_titles)
    key = index_cache_key(encoder, taxonomy, representation, excluded_titles)
    found = find_index(cache_dir, key)
    if found is not None:
        return load_index(found)
    # Exact vectors only under the model's key: an int8 encoder builds with its fp32 sibling.
    index = build_index(encoder.exact(), taxonomy, representation, excluded_titles, on_progress)
    index.save(
        cache_dir / key,
        {
            "model": encoder.model_id,
            "taxonomy": taxonomy.fingerprint,
            "representation": representation,
            "excluded_titles": len(excluded_titles),
        },
    )
    return index
