"""Training pairs that make the whole taxonomy, not the 32 occupations we have ads for, drive
the model (issue 13).

Why each part is here:

- Labelled postings cover 32 of 1,016 occupations. Repeated ten times (the `full` preset) they
  were about a quarter of all pairs and pulled the model towards those occupations. Here each
  occupation's posting pairs are repeated only up to `posting_cap_per_occupation` pairs, about
  what every other occupation gets from O*NET.
- Posting-shaped anchors for every occupation: alternate titles and *train-split* reported
  titles rewritten by the seeded noise process (`onet_llm/train/title_noise.py`: employer,
  seniority, abbreviations, location, shift, requisition numbers, typos, case). The validation
  and test reported titles, and so their noisy versions in `eval/data/titles_as_written.csv`,
  are never used: the caller passes them as `held_out`.
- Pseudo postings: a noisy title followed by one of the occupation's task statements (or its
  description when O*NET lists no tasks), cut like the served `title_body_head` text, so the
  model sees title + body shaped text for occupations without a single real ad.

Hard negatives for every pair (noisy and pseudo anchors included) are mined by
`onet_llm.train.data.mine_hard_negatives` from a shortlist over all 1,016 occupations.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import pandas as pd

from onet_llm.shortlist.index import normalise_title
from onet_llm.shortlist.text import BODY_HEAD_CHARACTERS
from onet_llm.taxonomy import Taxonomy
from onet_llm.train.data import TrainingPair
from onet_llm.train.title_noise import noise_title

NOISY_TITLE_SOURCE = "noisy_title"
PSEUDO_POSTING_SOURCE = "pseudo_posting"


def _pair(anchor: str, code: str, source: str) -> TrainingPair:
    return TrainingPair(anchor, code, source)


def trainable_titles(
    taxonomy: Taxonomy, held_out: Iterable[str], include_occupation_titles: bool = True
) -> dict[str, list[str]]:
    """Per occupation, its distinct alternate and reported titles that may be trained on:
    never a held-out (validation or test) reported title, wherever it also occurs. Its own
    O*NET title comes last unless it is already there or `include_occupation_titles` is off."""
    excluded = {normalise_title(title) for title in held_out}
    grouped: dict[str, dict[str, str]] = {}
    for table in (taxonomy.alternate_titles, taxonomy.reported_titles):
        for code, title in zip(table["onet_code"], table["title"], strict=True):
            key = normalise_title(title)
            if key not in excluded:
                grouped.setdefault(code, {}).setdefault(key, title)
    if include_occupation_titles:
        for occupation in taxonomy.occupations:
            grouped.setdefault(occupation.code, {}).setdefault(
                normalise_title(occupation.title), occupation.title
            )
    return {code: list(titles.values()) for code, titles in sorted(grouped.items())}


def noisy_title_pairs(
    taxonomy: Taxonomy, held_out: Iterable[str], per_occupation: int, rng: random.Random
) -> list:
    """`per_occupation` noisy rewrites of trainable titles, for every occupation."""
    pairs = []
    for code, titles in trainable_titles(taxonomy, held_out).items():
        chosen = rng.sample(titles, min(per_occupation, len(titles)))
        while len(chosen) < per_occupation:  # few titles: rewrite some twice, differently
            chosen.append(rng.choice(titles))
        for title in chosen:
            noisy = noise_title(title, rng).title
            pairs.append(_pair(noisy, code, NOISY_TITLE_SOURCE))
    return pairs


def pseudo_posting_pairs(
    taxonomy: Taxonomy, held_out: Iterable[str], per_occupation: int, rng: random.Random
) -> list:
    """Noisy title + a task statement (or the description), as `title_body_head` text."""
    tasks: dict[str, list[str]] = {}
    for code, task in zip(taxonomy.tasks["onet_code"], taxonomy.tasks["task"], strict=True):
        tasks.setdefault(code, []).append(task)
    pairs = []
    for code, titles in trainable_titles(taxonomy, held_out).items():
        bodies = tasks.get(code) or [taxonomy.occupation(code).description]
        for _ in range(per_occupation):
            title = noise_title(rng.choice(titles), rng).title
            body = " ".join(rng.sample(bodies, min(2, len(bodies))))
            anchor = f"{title}. {body[:BODY_HEAD_CHARACTERS]}"
            pairs.append(_pair(anchor, code, PSEUDO_POSTING_SOURCE))
    return pairs


def capped_posting_pairs(pairs: list, cap_per_occupation: int, repeats: int) -> list:
    """Each occupation's posting pairs repeated (up to `repeats` times) but never beyond
    `cap_per_occupation` pairs, so that 32 occupations' ads do not dominate."""
    by_code: dict[str, list] = {}
    for pair in pairs:
        by_code.setdefault(pair.onet_code, []).append(pair)
    out = []
    for code in sorted(by_code):
        own = by_code[code]
        copies = max(1, min(repeats, cap_per_occupation // max(1, len(own))))
        out += (own * copies)[: max(cap_per_occupation, len(own))]
    return out


def mix_summary(pairs: list) -> pd.DataFrame:
    """Pairs per source and how many occupations each covers (for logs and the model card)."""
    frame = pd.DataFrame(
        {"source": [p.source for p in pairs], "code": [p.onet_code for p in pairs]}
    )
    return frame.groupby("source").agg(pairs=("code", "size"), occupations=("code", "nunique"))


def taxonomy_validation_evaluator(taxonomy: Taxonomy):
    """Shortlist metrics on the whole-taxonomy validation titles (reported titles, clean and as
    written; all occupations, never trained on) against every occupation's title."""
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    from onet_llm.resources import eval_data_file

    queries: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for file, prefix in (("reported_titles.csv", "clean"), ("titles_as_written.csv", "written")):
        frame = pd.read_csv(eval_data_file(file), dtype=str, keep_default_na=False)
        frame = frame[frame["split"] == "validation"]
        for row, (title, code) in enumerate(zip(frame["title"], frame["onet_code"], strict=True)):
            queries[f"{prefix}-{row}"] = title
            relevant[f"{prefix}-{row}"] = {code}
    return InformationRetrievalEvaluator(
        queries=queries,
        corpus={code: taxonomy.title(code) for code in taxonomy.codes},
        relevant_docs=relevant,
        name="taxonomy",
        accuracy_at_k=[1, 5, 20],
        precision_recall_at_k=[20],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[10],
        show_progress_bar=False,
        batch_size=64,
    )


def selection_evaluator(taxonomy: Taxonomy, postings_evaluator=None):
    """Whole-taxonomy validation first (it picks the checkpoint), then the dev-ads validation
    postings as a second figure that must not fall apart. Its figures also carry the
    `BLEND_SCORE` that `--select-on blend` picks on."""
    from sentence_transformers.sentence_transformer.evaluation import SequentialEvaluator

    class BlendedEvaluator(SequentialEvaluator):
        def __call__(self, model, output_path=None, epoch=-1, steps=-1) -> dict[str, float]:
            figures = super().__call__(model, output_path, epoch, steps)
            figures[BLEND_SCORE] = blend_score(figures)
            return figures

    evaluators = [taxonomy_validation_evaluator(taxonomy)]
    if postings_evaluator is not None:
        evaluators.append(postings_evaluator)
    return BlendedEvaluator(evaluators)


BLEND_SCORE = "blend_score"


def blend_score(figures: dict[str, float]) -> float:
    """The mean of whole-taxonomy validation MRR@10 and dev-ads validation recall@20.

    Why recall@20 of the ads: the x20 mix chosen on whole-taxonomy MRR@10 alone gained top-1
    everywhere but let 6 of 185 test ads drop out of the shortlist (the bar allows 3), and a
    shortlist that misses the answer caps every later stage (eval/taxonomy.md). Without
    validation postings the blend is the whole-taxonomy figure alone.
    """
    taxonomy_mrr = figures["taxonomy_cosine_mrr@10"]
    postings_recall = figures.get("validation_cosine_accuracy@20")
    if postings_recall is None:
        return taxonomy_mrr
    return (taxonomy_mrr + postings_recall) / 2
