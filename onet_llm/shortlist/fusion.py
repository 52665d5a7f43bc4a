"""The `fusion` index: centroid and exemplar scores of every occupation, added.

Why both: the centroid (`title_blend`: the title's vector blended with the mean of all the
occupation's titles) is robust, since one odd alternate title cannot pull it far, but it blurs
occupations whose titles are varied ("...Managers", "All Other" catch-alls). The exemplar score
(the best single title of the occupation, `alternate_max`) finds the one title that matches a
rare or specific posting exactly, but a single loose alternate title can also win. Adding the two
(`CENTROID_WEIGHT` x centroid + the rest x best exemplar) lets each correct the other; which
weight (and whether fusion beats either route alone) was measured on the whole-taxonomy
validation titles: `eval/representations_taxonomy.md`.

Scores are exact for every occupation: the query is compared with every title vector (one matrix
product per chunk of queries) and the best per occupation is taken, so no occupation is lost
because it fell outside a FAISS candidate depth.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from onet_llm.shortlist.encoder import Encoder
from onet_llm.shortlist.index import (
    BUILD_BATCH,
    TITLE_BLEND_WEIGHT,
    Progress,
    occupation_entries,
)
from onet_llm.taxonomy import Taxonomy

# Share of the centroid's score in the fused score, chosen on whole-taxonomy validation.
CENTROID_WEIGHT = 0.5
QUERY_CHUNK = 256
# 2: entry vectors stored in float16 (half the size of the packaged index; scored in float32).
FUSION_FORMAT_VERSION = 2


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


def centroid_vectors(
    entry_vectors: np.ndarray,
    positions: np.ndarray,
    title_vectors: np.ndarray,
    title_weight: float = TITLE_BLEND_WEIGHT,
) -> np.ndarray:
    """`title_blend` vectors: title_weight x title + the rest x the mean of all titles."""
    sums = np.zeros((len(title_vectors), entry_vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, positions, entry_vectors)
    blended = title_weight * title_vectors + (1 - title_weight) * _unit_rows(sums)
    return _unit_rows(blended).astype(np.float32)


def best_entry_scores(
    queries: np.ndarray, entry_vectors: np.ndarray, starts: np.ndarray
) -> np.ndarray:
    """(queries x occupations) best inner product over each occupation's entries.

    Entries are sorted by occupation; `starts[i]` is the first entry of occupation i."""
    out = np.empty((len(queries), len(starts)), dtype=np.float32)
    for begin in range(0, len(queries), QUERY_CHUNK):
        similarities = queries[begin : begin + QUERY_CHUNK] @ entry_vectors.T
        out[begin : begin + QUERY_CHUNK] = np.maximum.reduceat(similarities, starts, axis=1)
    return out


class FusionIndex:
    """Same `search` contract as `OccupationIndex`: top-k occupation positions and scores."""

    def __init__(
        self,
        entry_vectors: np.ndarray,
        positions: np.ndarray,
        centroids: np.ndarray,
        centroid_weight: float = CENTROID_WEIGHT,
    ) -> None:
        order = np.argsort(positions, kind="stable")
        # Scored as stored (float16, `save`), also by the run that builds the index: it then
        # ranks exactly as every later run that loads it, so near-ties never swap between the
        # two and the LLM's prompts (and cache keys) stay the same.
        stored = entry_vectors[order].astype(np.float16).astype(np.float32)
        self.entry_vectors = np.ascontiguousarray(stored)
        self.positions = positions[order].astype(np.int64)
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.n_occupations = len(centroids)
        self.centroid_weight = centroid_weight
        starts = np.flatnonzero(np.r_[True, self.positions[1:] != self.positions[:-1]])
        if len(starts) != self.n_occupations or self.positions[0] != 0:
            raise ValueError("every occupation needs at least one entry (its own title)")
        self.starts = starts

    @property
    def entry_count(self) -> int:
        return len(self.entry_vectors)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(queries x occupations) fused scores."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        centroid = queries @ self.centroids.T
        if self.centroid_weight >= 1:
            return centroid
        exemplar = best_entry_scores(queries, self.entry_vectors, self.starts)
        return self.centroid_weight * centroid + (1 - self.centroid_weight) * exemplar

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.n_occupations)
        scores = self.scores(queries)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)

    def save(self, folder: Path, metadata: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "entries.npy", self.entry_vectors.astype(np.float16))
        np.save(folder / "positions.npy", self.positions)
        np.save(folder / "centroids.npy", self.centroids)
        (folder / "metadata.json").write_text(
            json.dumps(
                {
                    **metadata,
                    "n_occupations": self.n_occupations,
                    "centroid_weight": self.centroid_weight,
                    "fusion_format": FUSION_FORMAT_VERSION,
                },
                indent=2,
            )
        )
        (folder / "complete").write_text("")  # written last: its presence means complete

    @classmethod
    def load(cls, folder: Path, centroid_weight: float = CENTROID_WEIGHT) -> FusionIndex:
        """The weight is a scoring choice, not part of the vectors: today's constant applies."""
        return cls(
            np.load(folder / "entries.npy").astype(np.float32),
            np.load(folder / "positions.npy"),
            np.load(folder / "centroids.npy"),
            centroid_weight,
        )


def build_fusion_index(
    encoder: Encoder,
    taxonomy: Taxonomy,
    excluded_titles: Iterable[str] = (),
    centroid_weight: float = CENTROID_WEIGHT,
    on_progress: Progress | None = None,
) -> FusionIndex:
    """Encode every title of every occupation (the `title_blend` entries), reporting
    `on_progress(texts_done, texts_total)`; saved and found like any index
    (`index.load_or_build_index`)."""
    entries = occupation_entries(taxonomy, "title_blend", excluded_titles)
    total = len(entries.texts)
    parts = []
    for start in range(0, total, BUILD_BATCH):
        parts.append(encoder.encode(entries.texts[start : start + BUILD_BATCH]))
        if on_progress:
            on_progress(min(start + BUILD_BATCH, total), total)
    vectors = np.concatenate(parts)
    n = len(taxonomy)
    entry_vectors, positions = vectors[:-n], entries.positions[:-n]
    centroids = centroid_vectors(entry_vectors, positions, vectors[-n:])
    return FusionIndex(entry_vectors, positions, centroids, centroid_weight)
