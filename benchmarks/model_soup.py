"""Weight-averaged fine-tunes ("model soups"), an experiment for issue 13.

    python benchmarks/model_soup.py OUT_DIR MODEL=WEIGHT [MODEL=WEIGHT ...]
    python benchmarks/model_soup.py /tmp/soup default=0.5 /work/train/warm-tt=0.5
    python benchmarks/taxonomy_representations.py --models /tmp/soup --out F

Fine-tunes that start from the same pretrained weights tend to lie in one basin of the loss, so
their average is often better than either, at no cost at inference: the soup is one model of the
same size (Wortsman et al. 2022, "Model soups"). Averaging a fine-tune with its untuned base
(WiSE-FT, Wortsman et al. 2022) trades some in-domain fit for robustness. Every model named
here is a sentence-transformers folder or a short name (`default`, `base`); their weights are
averaged in fp32 with the given weights (normalised to sum to 1) and the soup is written as a
sentence-transformers folder, with a `soup_card.json` naming its ingredients. Choices are made
on validation with `benchmarks/taxonomy_representations.py`; test is not read here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from onet_llm.shortlist.encoder import model_fingerprint, resolve_model_path

WEIGHTS_FILE = "model.safetensors"


def parse_ingredients(arguments: list[str]) -> list[tuple[Path, float]]:
    """`MODEL=WEIGHT` arguments -> (model folder, weight), weights normalised to sum to 1."""
    ingredients = []
    for argument in arguments:
        model, separator, weight = argument.rpartition("=")
        if not separator:
            raise SystemExit(f"{argument!r}: expected MODEL=WEIGHT")
        ingredients.append((resolve_model_path(model), float(weight)))
    total = sum(weight for _, weight in ingredients)
    if total <= 0:
        raise SystemExit("the weights must sum to more than 0")
    return [(path, weight / total) for path, weight in ingredients]


def averaged_weights(ingredients: list[tuple[Path, float]]) -> dict[str, torch.Tensor]:
    """Weighted average of the ingredients' tensors, in fp32, stored in the first one's dtype.

    Every ingredient must hold the first one's tensors with the same shapes (the same
    architecture); buffers only some hold (the base model's `position_ids`) are left out."""
    first = load_file(ingredients[0][0] / WEIGHTS_FILE)
    total = {name: tensor.float() * ingredients[0][1] for name, tensor in first.items()}
    for path, weight in ingredients[1:]:
        tensors = load_file(path / WEIGHTS_FILE)
        for name in total:
            if name not in tensors or tensors[name].shape != total[name].shape:
                raise SystemExit(f"{path}: no tensor {name} shaped as in {ingredients[0][0]}")
            total[name] += tensors[name].float() * weight
    return {name: total[name].to(first[name].dtype).contiguous() for name in total}


def write_soup(out: Path, ingredients: list[tuple[Path, float]]) -> None:
    """Copy the first ingredient's configuration and tokenizer (not its weights or its model and
    training cards, which describe that model alone), then write the averaged weights."""
    template = ingredients[0][0]
    out.mkdir(parents=True, exist_ok=True)
    for file in template.rglob("*"):
        relative = file.relative_to(template)
        if file.is_dir() or relative.name in {WEIGHTS_FILE, "training_card.json", "README.md"}:
            continue
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(file.read_bytes())
    save_file(averaged_weights(ingredients), out / WEIGHTS_FILE)
    card = [
        {"model": str(path), "fingerprint": model_fingerprint(path), "weight": round(weight, 4)}
        for path, weight in ingredients
    ]
    (out / "soup_card.json").write_text(json.dumps({"ingredients": card}, indent=1) + "\n")


def main() -> None:
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    out = Path(sys.argv[1])
    write_soup(out, parse_ingredients(sys.argv[2:]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
