"""Rewrite clean O*NET titles the way people write them on postings and resumes.

Why: O*NET titles are tidy ("Motor Transport Operator"); real ones are not ("88m motor
transport operator, us army", "Sr. Accountant II - Req #48213"). The same seeded process builds
the synthetic "titles as written" evaluation sets (from held-out reported titles) and
posting-shaped training anchors (from alternate and train-split reported titles only), so the
model learns to read through the noise and the evaluation measures whether it does.

The process is synthetic and documented here and in `eval/data/README.md`: it measures
robustness to noise, not accuracy on real postings. Each title gets one or more of these
transformations, in this order, each drawn with its own probability (`PROBABILITIES`); a title
that draws none gets one chosen uniformly from those that apply to it:

- `seniority`: a seniority word before the title ("Senior", "Lead", "Junior", ...) or a level
  after it ("II", "III", "Level 2", ...).
- `abbreviation`: common short forms ("Manager" -> "Mgr", "Senior" -> "Sr.", "and" -> "&").
- `employer`: an invented employer after a comma, " - " or " at " ("..., Valley Health LLC").
- `location`: a place or "Remote" / "Hybrid" after a separator or in brackets.
- `shift`: schedule words ("Night Shift", "PRN", "Full-Time").
- `requisition`: a requisition or job number ("Req #48213", "(R-0012345)", "JR104233").
- `typo`: one swapped, dropped or doubled letter in one word of five letters or more.
- `case`: all lower case (most often) or all upper case.

The output depends only on the seed and the title's position and text, so the same seed always
gives the same rewrite, and adding titles elsewhere in a list does not change the others.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

TRANSFORMATIONS: tuple[str, ...] = (
    "seniority",
    "abbreviation",
    "employer",
    "location",
    "shift",
    "requisition",
    "typo",
    "case",
)
PROBABILITIES: dict[str, float] = {
    "seniority": 0.3,
    "abbreviation": 0.35,
    "employer": 0.35,
    "location": 0.2,
    "shift": 0.1,
    "requisition": 0.12,
    "typo": 0.15,
    "case": 0.4,
}
NOISE_SEED = 20261201

SENIORITY_PREFIXES = (
    "Senior",
    "Sr.",
    "Sr",
    "Junior",
    "Jr.",
    "Lead",
    "Principal",
    "Staff",
    "Entry Level",
    "Trainee",
    "Experienced",
)
LEVEL_SUFFIXES = ("I", "II", "III", "IV", "1", "2", "3", "Level 2", "Level III", "(Senior)")
ABBREVIATIONS: dict[str, str] = {
    "manager": "Mgr",
    "management": "Mgmt",
    "senior": "Sr.",
    "junior": "Jr.",
    "assistant": "Asst.",
    "associate": "Assoc.",
    "technician": "Tech",
    "technicians": "Techs",
    "technologist": "Tech",
    "engineer": "Engr",
    "specialist": "Spec.",
    "representative": "Rep",
    "coordinator": "Coord.",
    "administrator": "Admin",
    "administrative": "Admin",
    "supervisor": "Supv",
    "director": "Dir.",
    "department": "Dept",
    "operator": "Op",
    "maintenance": "Maint.",
    "development": "Dev",
    "developer": "Dev",
    "information": "Info",
    "operations": "Ops",
    "services": "Svcs",
    "service": "Svc",
    "customer": "Cust.",
    "registered nurse": "RN",
    "licensed practical nurse": "LPN",
    "vice president": "VP",
    "human resources": "HR",
    "information technology": "IT",
    "and": "&",
}
EMPLOYER_STEMS = (
    "Valley",
    "Summit",
    "Pioneer",
    "Harbor",
    "Evergreen",
    "Northstar",
    "Blue Ridge",
    "Lakeside",
    "Granite",
    "Riverbend",
    "Keystone",
    "Liberty",
    "Cedar",
    "Atlas",
    "Meridian",
    "Silverline",
    "Prairie",
    "Coastal",
    "Redwood",
    "Heritage",
)
EMPLOYER_KINDS = (
    "Health",
    "Health System",
    "Medical Center",
    "Logistics",
    "Manufacturing",
    "Solutions",
    "Group",
    "Partners",
    "Foods",
    "Energy",
    "Construction",
    "Bank",
    "Schools",
    "Staffing",
    "Technologies",
    "Services",
    "County",
    "University",
)
EMPLOYER_SUFFIXES = ("", "", "", " Inc.", " LLC", ", LLC", " Corp", " Co.", " Ltd")
EMPLOYER_SEPARATORS = (", ", ", ", " - ", " at ", " | ")
LOCATIONS = (
    "Austin, TX",
    "Chicago, IL",
    "Denver, CO",
    "Columbus, OH",
    "Phoenix, AZ",
    "Atlanta, GA",
    "Seattle, WA",
    "Raleigh, NC",
    "Boise, ID",
    "Tampa, FL",
    "Remote",
    "Hybrid",
    "Onsite",
    "US-Remote",
)
LOCATION_FORMATS = (" - {}", " ({})", " | {}", ", {}", " in {}")
SHIFTS = (
    "Night Shift",
    "Day Shift",
    "2nd Shift",
    "Nights",
    "Weekends",
    "PRN",
    "Per Diem",
    "Full-Time",
    "Part Time",
    "FT",
    "Temp",
    "Contract",
    "Seasonal",
)
SHIFT_FORMATS = (" - {}", " ({})", " {}", ", {}")
_WORD = re.compile(r"[A-Za-z]{5,}")


@dataclass(frozen=True)
class NoisyTitle:
    """A rewritten title and the transformations that made it (in the order applied)."""

    title: str
    source_title: str
    transformations: tuple[str, ...]


def _seniority(title: str, rng: random.Random) -> str:
    if rng.random() < 0.6:
        return f"{rng.choice(SENIORITY_PREFIXES)} {title}"
    return f"{title} {rng.choice(LEVEL_SUFFIXES)}"


def _abbreviation_patterns(title: str) -> list[str]:
    lowered = title.lower()
    return [phrase for phrase in ABBREVIATIONS if re.search(rf"\b{re.escape(phrase)}\b", lowered)]


def _abbreviation(title: str, rng: random.Random) -> str:
    found = _abbreviation_patterns(title)
    chosen = rng.sample(found, k=min(len(found), rng.choice((1, 1, 2))))
    for phrase in chosen:
        title = re.sub(
            rf"\b{re.escape(phrase)}\b", ABBREVIATIONS[phrase], title, count=1, flags=re.I
        )
    return title


def employer_name(rng: random.Random) -> str:
    """An invented employer ("Harbor Logistics LLC"): never a real company on purpose."""
    return (
        f"{rng.choice(EMPLOYER_STEMS)} {rng.choice(EMPLOYER_KINDS)}{rng.choice(EMPLOYER_SUFFIXES)}"
    )


def _employer(title: str, rng: random.Random) -> str:
    return f"{title}{rng.choice(EMPLOYER_SEPARATORS)}{employer_name(rng)}"


def _location(title: str, rng: random.Random) -> str:
    return title + rng.choice(LOCATION_FORMATS).format(rng.choice(LOCATIONS))


def _shift(title: str, rng: random.Random) -> str:
    return title + rng.choice(SHIFT_FORMATS).format(rng.choice(SHIFTS))


def _requisition(title: str, rng: random.Random) -> str:
    number = rng.randint(1000, 9_999_999)
    formats = (" - Req #{}", " (Req {})", " (R-{:07d})", " JR{}", " #{}", " - {}")
    chosen = rng.choice(formats)
    if chosen == " - {}":
        return title + chosen.format(f"{rng.randint(2019, 2026)}-{rng.randint(100, 9999)}")
    return title + chosen.format(number)


def _typo(title: str, rng: random.Random) -> str:
    words = list(_WORD.finditer(title))
    if not words:
        return title
    match = rng.choice(words)
    word = match.group()
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap":
        new = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    elif kind == "drop":
        new = word[:i] + word[i + 1 :]
    else:
        new = word[:i] + word[i] + word[i:]
    return title[: match.start()] + new + title[match.end() :]


def _case(title: str, rng: random.Random) -> str:
    return title.upper() if rng.random() < 0.12 else title.lower()


_APPLY = {
    "seniority": _seniority,
    "abbreviation": _abbreviation,
    "employer": _employer,
    "location": _location,
    "shift": _shift,
    "requisition": _requisition,
    "typo": _typo,
    "case": _case,
}


def applicable(title: str) -> list[str]:
    """Transformations that can change this title (an abbreviation needs a word to shorten,
    a typo a word of five letters or more)."""
    names = list(TRANSFORMATIONS)
    if not _abbreviation_patterns(title):
        names.remove("abbreviation")
    if not _WORD.search(title):
        names.remove("typo")
    return names


def apply_transformations(title: str, names: Sequence[str], rng: random.Random) -> str:
    """Apply the named transformations in the canonical order (case last, so it lowers the
    employer and location too)."""
    for name in TRANSFORMATIONS:
        if name in names:
            title = _APPLY[name](title, rng)
    return title


def noise_title(title: str, rng: random.Random) -> NoisyTitle:
    """One noisy rewrite of one title, drawing each transformation with its probability."""
    possible = applicable(title)
    chosen = [name for name in possible if rng.random() < PROBABILITIES[name]]
    if not chosen:
        chosen = [rng.choice(possible)]
    return NoisyTitle(apply_transformations(title, chosen, rng), title, tuple(chosen))


def noise_titles(
    titles: Sequence[str], seed: int = NOISE_SEED, variant: int = 0
) -> list[NoisyTitle]:
    """Seeded rewrites of `titles`; `variant` gives an independent second (third...) rewrite
    of the same list, e.g. for several noisy training anchors per title."""
    return [
        noise_title(title, random.Random(f"{seed}:{variant}:{position}:{title}"))
        for position, title in enumerate(titles)
    ]
