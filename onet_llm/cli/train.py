"""`onet-llm train`: fine-tune the embedding model (the logic is in `onet_llm.train`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onet_llm.cli.common import HomeOption, console, err_console
from onet_llm.settings import Settings

PresetOption = Annotated[
    str,
    typer.Option(
        "--preset",
        help="small (<= 15 min on 2 CPU cores), full, or taxonomy (every occupation drives the "
        "model; checkpoint chosen on whole-taxonomy validation).",
    ),
]
DataOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--data",
        help="Labelled postings (title, body, onet_code[, split]); repeatable. "
        "Default: eval/data/dev_ads.csv. Rows with split=test are never used.",
    ),
]
OutputOption = Annotated[
    Path, typer.Option("-o", "--output", help="Folder for the fine-tuned model.")
]
LoraRankOption = Annotated[
    int | None,
    typer.Option(
        "--lora-rank",
        help="Train a LoRA adapter of this rank (needs peft) instead of every weight: "
        "a few-MB folder loaded on top of the base model.",
    ),
]

PostingCapOption = Annotated[
    int | None,
    typer.Option(
        "--posting-cap",
        help="Override the preset's cap of labelled-posting pairs per occupation (taxonomy: 48).",
    ),
]

PostingRepeatsOption = Annotated[
    int | None,
    typer.Option(
        "--posting-repeats",
        help="Override the preset's copies of each labelled-posting pair per epoch (10).",
    ),
]

SelectOnOption = Annotated[
    str | None,
    typer.Option(
        "--select-on",
        help="What picks the checkpoint: validation (dev-ads MRR@10), taxonomy (whole-taxonomy "
        "MRR@10) or blend (mean of whole-taxonomy MRR@10 and dev-ads recall@20). Default: the "
        "preset's.",
    ),
]

BaseModelOption = Annotated[
    str,
    typer.Option(
        "--base-model",
        help="Where training starts: base (all-MiniLM-L6-v2), default (the shipped fine-tuned "
        "model: a warm start; pair it with a lower --learning-rate) or a model folder.",
    ),
]

LearningRateOption = Annotated[
    float | None,
    typer.Option("--learning-rate", help="Override the preset's learning rate (1e-4)."),
]


def train(
    preset: PresetOption = "small",
    data: DataOption = None,
    output: OutputOption = Path("onet-minilm"),
    epochs: Annotated[float | None, typer.Option("--epochs", help="Override the preset.")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Override the preset.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    lora_rank: LoraRankOption = None,
    posting_cap: PostingCapOption = None,
    posting_repeats: PostingRepeatsOption = None,
    select_on: SelectOnOption = None,
    base_model: BaseModelOption = "base",
    learning_rate: LearningRateOption = None,
    home: HomeOption = None,
) -> None:
    """Fine-tune the embedding model on O*NET titles and labelled postings."""
    from onet_llm.train.data import TrainingOptions
    from onet_llm.train.trainer import train as run_training

    settings = Settings.load(home=home)
    options = TrainingOptions(
        preset=preset,
        data=tuple(data or ()),
        output=output,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        lora_rank=lora_rank,
        posting_cap=posting_cap,
        posting_repeats=posting_repeats,
        select_on=select_on,
        base_model=base_model,
        learning_rate=learning_rate,
    )
    result = run_training(
        options, settings.index_cache_dir, log=lambda line: err_console.print(line)
    )
    best = f"{result.best_score:.3f}" if result.best_score is not None else "n/a"
    chosen_on = result.best_metric.removeprefix("eval_")
    console.print(
        f"trained {result.steps} steps in {result.seconds / 60:.1f} min; best {chosen_on} "
        f"{best} -> {result.output}"
    )
    console.print(f"use it: onet-llm label POSTINGS --model {result.output}")
