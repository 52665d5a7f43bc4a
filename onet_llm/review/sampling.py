"""Audit samples and the accuracy estimate an auditor signs off.

`review sample` draws a seeded random sample of a run's rows, simple or stratified. Stratified
by `confidence`, the strata are the rows the page calls low confidence (see
`store.reviews.LOW_CONFIDENCE`) and the rest; by `source`, embedding / llm / fallback / error.
Strata get equal shares of the sample (capped at their size, the remainder passed on), so a
rare doubtful stratum is over-sampled; the estimate weighs each reviewed row by N_h / n_h
(stratum rows over reviewed sample rows in it), which undoes that.

Accuracy is the share of reviewed sample rows whose label after review (the newest accept or
override) is the run's top-1 label. Per source it is a domain (ratio) estimate. Its standard
error comes from the stratified design with the finite-population correction (Taylor
linearisation, as in Cochran 1977, Sampling Techniques, ch. 5 and 6), and the 95% interval is
Wilson's score interval on the estimate's effective sample size p(1-p)/var (Kish), which stays
inside [0, 1] and does not collapse to a point when every reviewed row is right.
Unreviewed sample rows are left out: the estimate assumes they are missing at random within
their stratum, so review the whole sample before signing off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd

from onet_llm.errors import InputError
from onet_llm.store import Store

Stratify = Literal["none", "confidence", "source"]
Z_95 = 1.959963984540054
SOURCES = ("embedding", "llm", "fallback", "error")


@dataclass(frozen=True)
class SampleSummary:
    sample_id: int
    rows: int
    strata: dict[str, tuple[int, int]]  # stratum -> (rows in the run, rows drawn)


@dataclass(frozen=True)
class AccuracyEstimate:
    """The estimated accuracy of the run's top-1 labels over one domain (all rows or a source)."""

    domain: str
    drawn: int
    reviewed: int
    correct: int
    accuracy: float | None
    low: float | None
    high: float | None
    weighted: bool


def doubtful(facts: pd.DataFrame, low_confidence: float, margin: float) -> pd.Series:
    """The page's low-confidence rule on a frame of row facts (True: doubtful)."""
    differs = (facts["source"] == "llm") & (
        facts["label_code"].fillna("\0") != facts["embedding_code"].fillna("\0")
    )
    return (facts["confidence"] < low_confidence) | (facts["margin"] < margin) | differs


def strata_of(facts: pd.DataFrame, stratify: Stratify, low: float, margin: float) -> pd.Series:
    if stratify == "none":
        return pd.Series("all", index=facts.index)
    if stratify == "source":
        return facts["source"].fillna("error").astype(str)
    return doubtful(facts, low, margin).map({True: "low confidence", False: "confident"})


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Equal shares of n over the strata, each capped at its size, leftovers passed on."""
    left, shares, open_strata = n, dict.fromkeys(sizes, 0), sorted(sizes, key=sizes.get)
    while left > 0 and open_strata:
        each = max(1, left // len(open_strata))
        for name in list(open_strata):
            take = min(each, sizes[name] - shares[name], left)
            shares[name] += take
            left -= take
            if shares[name] == sizes[name]:
                open_strata.remove(name)
            if left == 0:
                break
    return shares


def draw_sample(
    store: Store,
    run_id: str,
    n: int,
    stratify: str = "none",
    seed: int = 0,
    low_confidence: float = 0.5,
    margin: float = 0.05,
) -> SampleSummary:
    """Draw and record a seeded sample of n rows (all rows when the run has fewer)."""
    if stratify not in get_args(Stratify):
        raise InputError(f"--stratify must be one of none, confidence, source; got {stratify!r}")
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    facts = store.run_row_facts(run_id)
    if facts.empty:
        raise InputError(f"run {run_id} has no rows to sample")
    facts["stratum"] = strata_of(facts, stratify, low_confidence, margin)  # type: ignore[arg-type]
    sizes = facts["stratum"].value_counts().to_dict()
    shares = allocate({str(k): int(v) for k, v in sizes.items()}, min(n, len(facts)))
    rng = np.random.default_rng(seed)
    drawn = []
    for stratum in sorted(shares):
        members = facts[facts["stratum"] == stratum].sort_values("row_number")
        picked = rng.choice(len(members), size=shares[stratum], replace=False)
        chosen = members.iloc[np.sort(picked)].copy()
        chosen["stratum_rows"] = len(members)
        chosen["stratum_sample"] = shares[stratum]
        drawn.append(chosen)
    sample = pd.concat(drawn).sort_values("row_number")
    sample_id = store.save_sample(run_id, sample, stratify, seed)
    return SampleSummary(
        sample_id=sample_id,
        rows=len(sample),
        strata={name: (int(sizes[name]), shares[name]) for name in sorted(shares)},
    )


def estimate(outcomes: pd.DataFrame, domain: pd.Series, name: str) -> AccuracyEstimate:
    """The accuracy of top-1 labels over the `domain` rows of a sample's outcomes."""
    reviewed = outcomes["reviewed_code"].notna()
    frame = outcomes[reviewed].copy()
    frame["correct"] = (frame["reviewed_code"] == frame["label_code"]).astype(float)
    frame["in_domain"] = domain[reviewed].astype(float)
    per_stratum = frame.groupby("stratum")["row_number"].transform("count")
    frame["weight"] = frame["stratum_rows"] / per_stratum
    weighted = bool(outcomes["stratify"].iloc[0] != "none") if len(outcomes) else False
    in_domain = frame[frame["in_domain"] == 1.0]
    drawn = int(domain.sum())
    if in_domain.empty:
        return AccuracyEstimate(name, drawn, 0, 0, None, None, None, weighted)
    domain_size = float((frame["weight"] * frame["in_domain"]).sum())
    accuracy = float((frame["weight"] * frame["in_domain"] * frame["correct"]).sum() / domain_size)
    frame["score"] = frame["weight"] * frame["in_domain"] * (frame["correct"] - accuracy)
    variance = 0.0
    for _, stratum in frame.groupby("stratum"):
        size, population = len(stratum), float(stratum["stratum_rows"].iloc[0])
        if size < 2:
            continue
        deviations = stratum["score"] - stratum["score"].mean()
        variance += (1 - size / population) * size / (size - 1) * float((deviations**2).sum())
    variance /= domain_size**2
    low, high = wilson(accuracy, variance, len(in_domain))
    return AccuracyEstimate(
        name, drawn, len(in_domain), int(in_domain["correct"].sum()), accuracy, low, high, weighted
    )


def wilson(accuracy: float, variance: float, reviewed: int) -> tuple[float, float]:
    """Wilson's 95% score interval on the effective sample size p(1-p)/var (Kish); the
    reviewed row count when the variance is 0 (every row right, or wrong, or a census)."""
    spread = accuracy * (1 - accuracy)
    n = spread / variance if variance > 0 and spread > 0 else float(reviewed)
    if variance == 0 and spread > 0:  # a census of the stratum: no sampling error
        return accuracy, accuracy
    z2 = Z_95**2
    centre = (accuracy + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 * math.sqrt(spread / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_estimates(store: Store, run_id: str) -> list[AccuracyEstimate]:
    """All rows first, then each source present in the newest sample."""
    outcomes = store.sample_outcomes(run_id)
    if outcomes.empty:
        return []
    estimates = [estimate(outcomes, pd.Series(True, index=outcomes.index), "all")]
    for source in SOURCES:
        mask = outcomes["source"] == source
        if mask.any():
            estimates.append(estimate(outcomes, mask, source))
    return estimates
