"""Taxonomy-guided examples for the infer prompt: the O*NET titles nearest to a posting, each
with its occupation, so a small model sees what a correct answer looks like.

The pool is every O*NET alternate title and reported title with its occupation, encoded once
with the shortlist's own encoder and cached beside the index (keyed by model + taxonomy). A
title that any evaluation holds out is never shown: reported titles of a `validation` or
`test` split of the shipped `reported_titles.csv`, and whatever an evaluation excludes from its
index (`blocked_titles`), are masked out before the nearest ones are chosen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from onet_llm.resources import eval_data_file
from onet_llm.shortlist.encoder import Encoder
from onet_llm.shortlist.index import normalise_title
from onet_llm.taxonomy import Taxonomy

POOL_FORMAT_VERSION = 1
DEFAULT_EXAMPLES = 3


def held_out_titles() -> set[str]:
    """Normalised reported titles of every non-train split shipped in `reported_titles.csv`."""
    path = eval_data_file("reported_titles.csv")
    if not path.is_file():
        return set()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {normalise_title(t) for t in frame.loc[frame["split"] != "train", "title"]}


def pool_entries(taxonomy: Taxonomy) -> tuple[list[str], list[str]]:
    """Distinct (title, code) pairs of the alternate and reported titles, in a fixed order."""
    pairs: dict[tuple[str, str], str] = {}
    for table in (taxonomy.alternate_titles, taxonomy.reported_titles):
        for code, title in zip(table["onet_code"], table["title"], strict=True):
            pairs.setdefault((code, normalise_title(title)), " ".join(str(title).split()))
    ordered = sorted(pairs.items())
    return [title for _, title in ordered], [code for (code, _), _ in ordered]


class ExamplePool:
    """Nearest allowed O*NET titles to each query, with their occupation titles."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        encoder: Encoder,
        texts: list[str],
        codes: list[str],
        vectors: np.ndarray,
        blocked_titles: Iterable[str] = (),
    ) -> None:
        self.taxonomy = taxonomy
        self.encoder = encoder
        blocked = held_out_titles() | {normalise_title(t) for t in blocked_titles}
        keep = [i for i, text in enumerate(texts) if normalise_title(text) not in blocked]
        self.texts = [texts[i] for i in keep]
        self.codes = [codes[i] for i in keep]
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors[keep], dtype=np.float32))

    @classmethod
    def load(
        cls,
        encoder: Encoder,
        taxonomy: Taxonomy,
        cache_dir: Path,
        blocked_titles: Iterable[str] = (),
    ) -> ExamplePool:
        """The pool from the cache beside the index, encoding it first if missing (a few
        minutes on a laptop CPU, once per model and taxonomy)."""
        texts, codes = pool_entries(taxonomy)
        digest = hashlib.sha256(
            json.dumps([POOL_FORMAT_VERSION, encoder.fingerprint, taxonomy.fingerprint]).encode()
        ).hexdigest()[:16]
        path = cache_dir / f"examples-{digest}.npy"
        if path.is_file():
            vectors = np.load(path)
        else:
            # Cached under the model's key: exact vectors (an int8 encoder's fp32 sibling).
            vectors = encoder.exact().encode(texts).astype(np.float32)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp.npy")
            np.save(temporary, vectors)
            temporary.rename(path)
        return cls(taxonomy, encoder, texts, codes, vectors, blocked_titles)

    def nearest(self, queries: Sequence[str], k: int) -> list[list[dict[str, str]]]:
        """Per query, the `k` nearest allowed titles as {title, occupation}, nearest last (the
        model reads the closest example just before the posting)."""
        if k <= 0 or not queries:
            return [[] for _ in queries]
        scores, ids = self.index.search(self.encoder.encode(list(queries)), k)
        return [
            [
                {"title": self.texts[i], "occupation": self.taxonomy.title(self.codes[i])}
                for i in reversed([int(i) for i in row if i >= 0])
            ]
            for row in ids
        ]
