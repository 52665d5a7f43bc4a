"""Remake the prebuilt index shipped in the package: `make index` (or
`python -m onet_llm.shortlist.packaged`).

The package carries the index of the shipped model, taxonomy and default representation under
its cache key (`onet_llm/indexes/<key>/`; the default `fusion` index holds every title's vector
in float16, about 45 MB), so `label` on a fresh install loads it
instead of encoding ~60,000 titles. Run this whenever the shipped model or the taxonomy
changes: `tests/shortlist/test_packaged_index.py` fails while the shipped index is stale.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from onet_llm.shortlist.encoder import Encoder
from onet_llm.shortlist.index import (
    DEFAULT_REPRESENTATION,
    build_index,
    index_cache_key,
    is_complete_index,
    load_index,
    packaged_indexes_dir,
)
from onet_llm.taxonomy import load_taxonomy


def shipped_index_key() -> str:
    """The cache key the shipped model's default index has (no weights are loaded)."""
    return index_cache_key(Encoder("default"), load_taxonomy(), DEFAULT_REPRESENTATION)


def rebuild_packaged_index(cache_dir: Path | None = None, log=print) -> Path:
    """Write the shipped model's index into the package, reusing a cached copy when one has
    the same key (saved again, so that the package gets this version's storage format and
    metadata), and remove any packaged index of another key."""
    encoder, taxonomy = Encoder("default"), load_taxonomy()
    key = index_cache_key(encoder, taxonomy, DEFAULT_REPRESENTATION)
    target_root = packaged_indexes_dir()
    target = target_root / key
    cached = cache_dir / key if cache_dir else None
    metadata = {
        "model": encoder.model_id,
        "taxonomy": taxonomy.fingerprint,
        "representation": DEFAULT_REPRESENTATION,
        "excluded_titles": 0,
    }
    if target.is_dir():
        log(f"packaged index {key} is current")
    elif cached is not None and is_complete_index(cached):
        load_index(cached).save(target, metadata)
        log(f"saved {cached} -> {target}")
    else:
        log(f"building the index for {encoder.model_id} (minutes on a CPU)")
        index = build_index(
            encoder,
            taxonomy,
            DEFAULT_REPRESENTATION,
            on_progress=lambda done, total: log(f"  {done:,}/{total:,} titles"),
        )
        index.save(target, metadata)
        log(f"wrote {target}")
    for stale in target_root.iterdir():
        if stale.is_dir() and stale.name != key:
            shutil.rmtree(stale)
            log(f"removed stale {stale}")
    return target


if __name__ == "__main__":
    from onet_llm.settings import Settings

    rebuild_packaged_index(Settings.load().index_cache_dir)
    sys.exit(0)
