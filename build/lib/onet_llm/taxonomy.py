"""The O*NET 30.1 taxonomy shipped with the package, and the SOC hierarchy around it.

O*NET-SOC codes look like `15-1252.00`. The SOC 2018 hierarchy is read off the code itself:
major group `15`, minor group `15-1`, broad occupation `15-125`, detailed occupation `15-1252`.
Metrics at coarser levels compare these prefixes, so they live here as pure functions.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import pandas as pd

ONET_CODE_PATTERN = re.compile(r"^\d{2}-\d{4}\.\d{2}$")

SocLevel = Literal["major", "minor", "broad", "detailed", "onet"]
# Number of leading characters of an O*NET-SOC code that identify each level.
SOC_LEVEL_PREFIX: dict[str, int] = {"major": 2, "minor": 4, "broad": 6, "detailed": 7, "onet": 10}

TAXONOMY_FILES = {
    "occupations": "Occupation Data.txt",
    "alternate_titles": "Alternate Titles.txt",
    "reported_titles": "Sample of Reported Titles.txt",
    "tasks": "Task Statements.txt",
    "job_zones": "Job Zones.txt",
}


def soc_code(onet_code: str, level: SocLevel) -> str:
    """The code of `onet_code` at a coarser level, e.g. ('15-1252.00', 'major') -> '15'."""
    return onet_code[: SOC_LEVEL_PREFIX[level]]


def is_onet_code(text: str) -> bool:
    return bool(ONET_CODE_PATTERN.match(text))


@dataclass(frozen=True)
class Occupation:
    code: str
    title: str
    description: str

    @property
    def major_group(self) -> str:
        return soc_code(self.code, "major")


def _read_onet_table(path: Path) -> pd.DataFrame:
    # O*NET files are tab separated with no quoting; keep "n/a" and blanks as strings.
    return pd.read_csv(
        path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, encoding="utf-8"
    )


class Taxonomy:
    """O*NET occupations with their alternate titles, reported titles, tasks and job zones.

    Occupations are kept sorted by code; their position in `occupations` is the row id used by
    the index, so it must never depend on anything but the files.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        occupations = _read_onet_table(data_dir / TAXONOMY_FILES["occupations"])
        occupations = occupations.sort_values("O*NET-SOC Code", ignore_index=True)
        self.occupations: list[Occupation] = [
            Occupation(code=row[0], title=row[1], description=row[2])
            for row in occupations[["O*NET-SOC Code", "Title", "Description"]].itertuples(
                index=False
            )
        ]
        self.codes: list[str] = [occupation.code for occupation in self.occupations]
        self.position: dict[str, int] = {code: i for i, code in enumerate(self.codes)}

        alternate = _read_onet_table(data_dir / TAXONOMY_FILES["alternate_titles"])
        self.alternate_titles = pd.DataFrame(
            {
                "onet_code": alternate["O*NET-SOC Code"],
                "title": alternate["Alternate Title"],
                "short_title": alternate["Short Title"].replace("n/a", ""),
            }
        )
        reported = _read_onet_table(data_dir / TAXONOMY_FILES["reported_titles"])
        self.reported_titles = pd.DataFrame(
            {"onet_code": reported["O*NET-SOC Code"], "title": reported["Reported Job Title"]}
        )
        tasks = _read_onet_table(data_dir / TAXONOMY_FILES["tasks"])
        self.tasks = pd.DataFrame(
            {
                "onet_code": tasks["O*NET-SOC Code"],
                "task": tasks["Task"],
                "type": tasks["Task Type"],
            }
        )
        zones = _read_onet_table(data_dir / TAXONOMY_FILES["job_zones"])
        self.job_zones: dict[str, int] = dict(
            zip(zones["O*NET-SOC Code"], zones["Job Zone"].astype(int), strict=True)
        )

    def __len__(self) -> int:
        return len(self.occupations)

    def __contains__(self, code: object) -> bool:
        return code in self.position

    def occupation(self, code: str) -> Occupation:
        return self.occupations[self.position[code]]

    def title(self, code: str) -> str:
        return self.occupations[self.position[code]].title

    @property
    def fingerprint(self) -> str:
        """Hash of the shipped files: part of every index cache key."""
        return taxonomy_fingerprint(self.data_dir)

    def search_titles(self, query: str, limit: int = 20) -> list[Occupation]:
        """Case-insensitive substring search over codes, titles and alternate titles.

        For people choosing an occupation by hand (the review page's override box).
        """
        needle = query.strip().lower()
        if not needle:
            return []
        hits = [
            occupation
            for occupation in self.occupations
            if needle in occupation.code or needle in occupation.title.lower()
        ]
        if len(hits) < limit:
            alternate_hits = self.alternate_titles[
                self.alternate_titles["title"].str.lower().str.contains(needle, regex=False)
            ]["onet_code"].unique()
            seen = {occupation.code for occupation in hits}
            hits += [self.occupation(code) for code in alternate_hits if code not in seen]
        return hits[:limit]


def default_data_dir() -> Path:
    return Path(str(resources.files("onet_llm") / "data" / "onet"))


@cache
def taxonomy_fingerprint(data_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in sorted(TAXONOMY_FILES.values()):
        digest.update(name.encode())
        digest.update((data_dir / name).read_bytes())
    return digest.hexdigest()[:16]


@cache
def load_taxonomy(data_dir: Path | None = None) -> Taxonomy:
    """The shipped O*NET 30.1 taxonomy (loaded once per process)."""
    return Taxonomy(data_dir or default_data_dir())


# SOC 2018 major groups (the first two digits of every O*NET-SOC code), for readable reports.
SOC_MAJOR_GROUPS: dict[str, str] = {
    "11": "Management",
    "13": "Business and Financial Operations",
    "15": "Computer and Mathematical",
    "17": "Architecture and Engineering",
    "19": "Life, Physical, and Social Science",
    "21": "Community and Social Service",
    "23": "Legal",
    "25": "Educational Instruction and Library",
    "27": "Arts, Design, Entertainment, Sports, and Media",
    "29": "Healthcare Practitioners and Technical",
    "31": "Healthcare Support",
    "33": "Protective Service",
    "35": "Food Preparation and Serving Related",
    "37": "Building and Grounds Cleaning and Maintenance",
    "39": "Personal Care and Service",
    "41": "Sales and Related",
    "43": "Office and Administrative Support",
    "45": "Farming, Fishing, and Forestry",
    "47": "Construction and Extraction",
    "49": "Installation, Maintenance, and Repair",
    "51": "Production",
    "53": "Transportation and Material Moving",
    "55": "Military Specific",
}
