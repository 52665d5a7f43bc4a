"""The shipped model without sentence-transformers: tokenizer, BERT, mean pooling, L2 norm.

Importing sentence-transformers costs seconds more than torch and transformers alone (it pulls
in scikit-learn and SciPy), and `label`/`search` pay it on every start. For a model folder that
is exactly Transformer -> mean Pooling -> Normalize (the shipped one and every full fine-tune
from `onet-llm train`), this computes the same vectors with transformers alone;
`tests/shortlist/test_light_encoder.py` checks them against sentence-transformers. Any other
folder (a LoRA adapter, another pooling) goes through sentence-transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from onet_llm.shortlist.encoder import DEFAULT_BATCH_SIZE

PLAIN_MODULES = ("Transformer", "Pooling", "Normalize")


def is_plain_mean_pooling(path: Path) -> bool:
    """Transformer -> mean Pooling -> Normalize, nothing else."""
    try:
        modules = json.loads((path / "modules.json").read_text())
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return False
    kinds = tuple(module["type"].rsplit(".", 1)[-1] for module in modules)
    return (
        kinds == PLAIN_MODULES
        and modules[0].get("path", "") == ""
        and pooling.get("pooling_mode", pooling.get("pooling_mode_mean_tokens")) in ("mean", True)
        and not (path / "adapter_config.json").is_file()
    )


def max_sequence_length(path: Path, tokenizer, config) -> int:
    """What sentence-transformers uses: the saved `max_seq_length`, else the tokenizer's
    model_max_length capped by the model's positions."""
    try:
        saved = json.loads((path / "sentence_bert_config.json").read_text()).get("max_seq_length")
    except (OSError, ValueError):
        saved = None
    limit = getattr(config, "max_position_embeddings", 512)
    return int(saved or min(getattr(tokenizer, "model_max_length", limit), limit))


class MeanPoolingModel:
    """The part of `SentenceTransformer` the encoder uses: `encode` to unit vectors."""

    def __init__(self, path: Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()
        self.max_seq_length = max_sequence_length(path, self.tokenizer, self.model.config)

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(
        self, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE, **_: object
    ) -> np.ndarray:
        """Unit vectors, batched by length like sentence-transformers (less padding)."""
        torch = self._torch
        order = np.argsort([-len(text) for text in texts], kind="stable")
        vectors = np.zeros((len(texts), self.get_sentence_embedding_dimension()), np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_seq_length,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                vectors[rows] = torch.nn.functional.normalize(pooled, dim=1).numpy()
        return vectors
