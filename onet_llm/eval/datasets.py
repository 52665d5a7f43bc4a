"""Evaluation data: a shipped dataset from `eval/data/` (with its provenance) or a user file
with a gold `onet_code` column. Bad rows stop the run with a one-line error naming the row, and
reports name the data, its hash, the sample and the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from onet_llm.errors import InputError
from onet_llm.resources import SOURCE_ROOT, eval_data_file
from onet_llm.tables import file_sha256, iter_table_chunks
from onet_llm.taxonomy import Taxonomy, soc_code


@dataclass(frozen=True)
class BuiltinDataset:
    """An evaluation set shipped in eval/data, with where it came from and what it may be
    used for."""

    name: str
    file: str
    split: str
    description: str
    exclude_titles: bool = False
    # The column whose titles the index leaves out: a noisy title's clean source title.
    exclude_column: str = "title"


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "dev-ads-test": BuiltinDataset(
        name="dev-ads-test",
        file="dev_ads.csv",
        split="test",
        description=(
            "32 occupations, seen in training. Test split of the 645 labelled dev job ads (Zhou "
            "et al. 2022, doi:10.5334/jopd.69): real postings, seeded split stratified by code "
            "with identical titles kept on one side; never used for training or model selection. "
            "Labels are the occupation each ad was collected for, not independent codings, so "
            "top-1 is a noisy lower bound."
        ),
    ),
    "dev-ads-validation": BuiltinDataset(
        name="dev-ads-validation",
        file="dev_ads.csv",
        split="validation",
        description=(
            "32 occupations, seen in training. Validation split of the 645 labelled dev job ads "
            "(Zhou et al. 2022, doi:10.5334/jopd.69): real postings never trained on, but the "
            "shipped model's checkpoint was chosen on them, so its figures here are a little "
            "flattering; the set the LLM modes' choices (cascade threshold, stages) are made on."
        ),
    ),
    "reported-titles-test": BuiltinDataset(
        name="reported-titles-test",
        file="reported_titles.csv",
        split="test",
        description=(
            "All occupations, held out. Test split of the O*NET 30.1 Sample of Reported Titles "
            "(titles only, seeded split). These titles are part of the taxonomy, so the index is "
            "rebuilt without them (and without any identical alternate title): the figure "
            "measures generalisation, not lookup."
        ),
        exclude_titles=True,
    ),
    "reported-titles-validation": BuiltinDataset(
        name="reported-titles-validation",
        file="reported_titles.csv",
        split="validation",
        description=(
            "All occupations, held out. Validation split of the O*NET 30.1 Sample of Reported "
            "Titles (seeded, stratified by code, carved out of the train split): the set choices "
            "are made on. The index is rebuilt without these titles."
        ),
        exclude_titles=True,
    ),
    "titles-as-written-test": BuiltinDataset(
        name="titles-as-written-test",
        file="titles_as_written.csv",
        split="test",
        description=(
            "All occupations, held out. SYNTHETIC: the test reported titles rewritten by the "
            "seeded noise process of onet_llm/title_noise.py (employer, seniority, abbreviations,"
            " location, shift, requisition numbers, typos, case). Measures robustness to noise, "
            "not accuracy on real postings. The index leaves out the clean titles."
        ),
        exclude_titles=True,
        exclude_column="source_title",
    ),
    "titles-as-written-validation": BuiltinDataset(
        name="titles-as-written-validation",
        file="titles_as_written.csv",
        split="validation",
        description=(
            "All occupations, held out. SYNTHETIC: the validation reported titles rewritten by "
            "the seeded noise process of onet_llm/title_noise.py; for choices, not reporting. The"
            " index leaves out the clean titles."
        ),
        exclude_titles=True,
        exclude_column="source_title",
    ),
}
DEFAULT_DATASET = "dev-ads-test"


@dataclass(frozen=True)
class EvalDataset:
    """The rows every mode is scored on, plus everything a reader needs to trust the figures."""

    name: str
    path: Path
    sha256: str
    description: str
    split: str | None
    rows_available: int
    sample: int | None
    seed: int
    exclude_titles: bool
    frame: pd.DataFrame  # row_number, id, title, body, onet_code (all strings but row_number)
    # Every title of the split, sampled or not: the index is the same whatever the sample.
    split_titles: tuple[str, ...] = ()

    @property
    def excluded_titles(self) -> list[str]:
        return list(self.split_titles) if self.exclude_titles else []

    def provenance(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": _display_path(self.path),
            "sha256": self.sha256,
            "description": self.description,
            "split": self.split,
            "rows_available": self.rows_available,
            "rows": len(self.frame),
            "sample": self.sample,
            "seed": self.seed,
            "index_excludes_evaluated_titles": self.exclude_titles,
        }


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(SOURCE_ROOT))
    except ValueError:
        return str(path)


def load_dataset(
    data: str | Path | None,
    taxonomy: Taxonomy,
    sample: int | None = None,
    seed: int = 0,
    split: str | None = None,
    exclude_titles: bool | None = None,
) -> EvalDataset:
    """A shipped dataset by name (default: the dev test ads) or a user file with `title` and a
    gold `onet_code` column (optional `body`, `id`, `split`). Bad rows stop the run with a
    one-line error naming the row."""
    data = str(data) if data is not None else DEFAULT_DATASET
    if data in BUILTIN_DATASETS:
        builtin = BUILTIN_DATASETS[data]
        path = eval_data_file(builtin.file)
        if not path.is_file():
            raise InputError(
                f"the shipped dataset {data!r} should be at {path}, which is missing (reinstall "
                "onet-llm, or pass --data FILE)"
            )
        name, description = builtin.name, builtin.description
        split = split if split is not None else builtin.split
        exclude = builtin.exclude_titles if exclude_titles is None else exclude_titles
        exclude_column = builtin.exclude_column
    else:
        path = Path(data).expanduser()
        name = path.stem
        description = f"user file {path.name}"
        exclude = bool(exclude_titles)
        exclude_column = "title"
    frame = read_gold_table(path, taxonomy)
    if split is not None:
        if "split" not in frame.columns:
            raise InputError(f"{path}: --split {split!r} given but the file has no 'split' column")
        frame = frame[frame["split"] == split]
        if frame.empty:
            raise InputError(f"{path}: no rows with split {split!r}")
        description += f" (split {split!r})" if name == path.stem else ""
    rows_available = len(frame)
    split_titles = tuple(frame[exclude_column])
    if sample is not None:
        if sample < 1:
            raise InputError(f"--sample must be at least 1, got {sample}")
        if sample < len(frame):
            # Kept in draw order, which is also the order the LLM sees the rows: a smaller
            # sample with the same seed is a prefix of this one, so after an interrupted run
            # `--sample N` for any N up to the rows done is answered from the call cache.
            frame = frame.sample(n=sample, random_state=seed)
    frame = frame.reset_index(drop=True)
    return EvalDataset(
        name=name,
        path=path,
        sha256=file_sha256(path),
        description=description,
        split=split,
        rows_available=rows_available,
        sample=sample if sample is not None and sample < rows_available else None,
        seed=seed,
        exclude_titles=exclude,
        frame=frame[["row_number", "id", "title", "body", "onet_code"]],
        split_titles=split_titles,
    )


def read_gold_table(path: Path, taxonomy: Taxonomy) -> pd.DataFrame:
    """All rows of a CSV/Parquet/JSONL file with gold codes, checked row by row."""
    frame = pd.concat(list(iter_table_chunks(path, 50_000)), ignore_index=True)
    for column in ("title", "onet_code"):
        if column not in frame.columns:
            columns = ", ".join(frame.columns) or "none"
            raise InputError(f"{path}: missing column {column!r} (columns are: {columns})")
    if frame.empty:
        raise InputError(f"{path}: no rows to evaluate")
    frame = frame.copy()
    frame["row_number"] = np.arange(1, len(frame) + 1)
    if "body" not in frame.columns:
        frame["body"] = ""
    ids_given = "id" in frame.columns
    if not ids_given:
        frame["id"] = frame["row_number"].astype(str)
    seen_ids: dict[str, int] = {}
    six_digit = {soc_code(code, "detailed") for code in taxonomy.codes}
    for row_number, row_id, title, body, code in zip(
        frame["row_number"],
        frame["id"],
        frame["title"],
        frame["body"],
        frame["onet_code"],
        strict=True,
    ):
        where = f"{path}: row {row_number} (id {row_id!r})"
        if not str(title).strip() and not str(body).strip():
            raise InputError(f"{where}: title and body are both empty")
        code = str(code).strip()
        if not code:
            raise InputError(f"{where}: the gold onet_code is empty")
        if code not in taxonomy and code not in six_digit:
            raise InputError(
                f"{where}: onet_code {code!r} is not an O*NET 30.1 code (8 digits, "
                "15-1252.00) or a 6-digit SOC code of one (15-1252)"
            )
        if row_id in seen_ids:
            raise InputError(
                f"{where}: id repeats row {seen_ids[row_id]} (ids must be unique so that runs "
                "can be compared row by row)"
            )
        seen_ids[row_id] = int(row_number)
    frame["onet_code"] = frame["onet_code"].str.strip()
    return frame
