"""The shipped model through ONNX Runtime: fp32 (`onnx`) or dynamically quantised int8
(`onnx-int8`), for more postings per core than torch gives.

The model is exported once per model fingerprint and backend into the index cache folder
(`<cache>/encoders/<fingerprint>-<backend>-v<N>/model.onnx`), never into the repository: the
export is reproducible from the weights, and the fp32 file is as large as the weights.

Why not sentence-transformers' own `backend="onnx"` and
`export_dynamic_quantized_onnx_model`: both go through optimum-onnx, whose newest release
(0.1.0) requires transformers < 4.58, and this project pins transformers 5.23. The export here
is `torch.onnx.export` of the transformer (the same graph optimum exports for feature
extraction) and `onnxruntime.quantization.quantize_dynamic` (what optimum calls underneath);
pooling and normalising stay in numpy, as in `light.MeanPoolingModel`. Only plain
mean-pooling folders (`light.is_plain_mean_pooling`) can take these backends.

At run time, once exported, neither torch nor sentence-transformers is imported (transformers
5 imports torch with its tokenizer classes, so the tokenizer is the model's `tokenizer.json`
run by the `tokenizers` library, set up as transformers would: same ids, checked by
tests/shortlist/test_onnx_encoder.py) and the graph runs in onnxruntime: less memory and a
faster start than torch.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import uuid
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from onet_llm.errors import ModelError
from onet_llm.shortlist.encoder import DEFAULT_BATCH_SIZE
from onet_llm.shortlist.light import max_sequence_length

ENCODER_BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx", "onnx-int8")
ONNX_BACKENDS: tuple[str, ...] = ("onnx", "onnx-int8")
# Backends whose vectors equal torch fp32's to float tolerance: runs on any of them are the
# same run (resume across them), and indexes may be built with them.
EXACT_BACKENDS: tuple[str, ...] = ("torch", "onnx")
# Bump a backend's version when its export changes (opset, graph, quantisation): its old
# exports are then ignored. int8 v2 keeps the first layer's FFN output projection in fp32.
EXPORT_VERSIONS: dict[str, int] = {"onnx": 1, "onnx-int8": 2}
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
MODEL_FILE = "model.onnx"


def export_folder(cache_dir: Path, fingerprint: str, backend: str) -> Path:
    """Where the export of this model and backend lives: keyed by the weights' hash."""
    return cache_dir / "encoders" / f"{fingerprint}-{backend}-v{EXPORT_VERSIONS[backend]}"


def export_file(cache_dir: Path, fingerprint: str, backend: str) -> Path:
    """The ONNX file of that export: present once the export has finished (it is renamed into
    place whole)."""
    return export_folder(cache_dir, fingerprint, backend) / MODEL_FILE


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_backend(backend: str, light: bool, export_cache_dir: Path | None) -> str:
    """The backend `auto` stands for: `onnx` where it can run (a plain mean-pooling folder,
    onnxruntime installed, a cache folder for the export), else `torch`. Both give the same
    vectors to float tolerance, so the choice changes speed, not labels (the same top-1 on
    all 3,341 test rows; only candidates tied to 4e-5 may swap). Others are themselves."""
    if backend != "auto":
        return backend
    if light and export_cache_dir is not None and onnxruntime_available():
        return "onnx"
    return "torch"


def require_onnxruntime() -> None:
    """A one-line error, not an ImportError, when onnxruntime was left out of an install."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise ModelError(
            "the onnx encoder backends need onnxruntime, which is missing from this "
            "environment: pip install onnxruntime (or use --encoder-backend torch)"
        ) from error


def export_fp32(model_path: Path, target: Path) -> None:
    """Export the transformer (ids, mask, type ids -> last hidden state) with dynamic batch
    and sequence axes. torch is imported here only: a cached export never needs it."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    class HiddenStates(torch.nn.Module):
        """Positional inputs by name: transformers 5 reordered `BertModel.forward`."""

        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = HiddenStates(AutoModel.from_pretrained(str(model_path), dtype=torch.float32).eval())
    sample = tokenizer(["a sample title", "another one"], padding=True, return_tensors="pt")
    inputs = tuple(sample[name] for name in INPUT_NAMES)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    # The tracer warns about shape checks that are constant for an encoder (no cache, never
    # causal), and the legacy exporter about itself: the fp32 test checks the graph instead.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            inputs,
            str(target),
            input_names=list(INPUT_NAMES),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def layer_of(node_name: str) -> int | None:
    """The encoder layer a node of the exported graph belongs to (`/model/encoder/layer.3/...`
    -> 3), or None outside the layers."""
    marker = "/layer."
    if marker not in node_name:
        return None
    digits = node_name.split(marker, 1)[1].split("/", 1)[0]
    return int(digits) if digits.isdigit() else None


def fp32_matmuls(node_names: list[str]) -> list[str]:
    """The MatMuls int8 leaves in fp32: the first encoder layer's FFN output projection.

    Its input (the GELU of the intermediate layer) has the widest range of any MatMul input,
    and dynamic quantisation gives a whole batch's activations one scale. Keeping only it in
    fp32 (1/18 of the encoder's MatMul work) was chosen on validation data among the FFN
    output projections of layers 0, 0-1, 0-2 and all six: top-1 agreement with fp32 rose from
    0.972 to 0.978 on the reported-titles validation split and from 0.949 to 0.956 on the
    titles-as-written one, the most of any choice for its cost (eval/int8.md)."""
    ffn_outputs = [
        name
        for name in node_names
        if name.endswith("/output/dense/MatMul") and "/attention/" not in name
    ]
    layers = [layer_of(name) for name in ffn_outputs]
    numbered = [layer for layer in layers if layer is not None]
    if not numbered:  # another architecture's graph: quantise everything, as export v1 did
        return []
    first = min(numbered)
    return [name for name, layer in zip(ffn_outputs, layers, strict=True) if layer == first]


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation (weights int8 per output channel, activations quantised per
    batch at run time) of every op onnxruntime can quantise, MatMuls and the embedding Gathers
    (the file drops from 90 to 25 MB), except `fp32_matmuls`. Per channel, not per tensor: on
    400 dev-ad titles and postings per-tensor int8 agreed with torch at cosine 0.973 mean /
    0.948 worst, per-channel at 0.994 / 0.987."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    kept = fp32_matmuls([node.name for node in graph.node if node.op_type == "MatMul"])
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its "consider pre-processing" advice, on every export
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=kept,
        )
    finally:
        logging.disable(previous)


def ensure_export(model_path: Path, fingerprint: str, backend: str, cache_dir: Path) -> Path:
    """The ONNX file of `backend` for this model, exporting it first when the cache lacks it.
    Written to a temporary folder and renamed, so a killed export leaves nothing half done."""
    if backend not in ONNX_BACKENDS:
        raise ModelError(f"no ONNX export for encoder backend {backend!r}")
    require_onnxruntime()
    target = export_file(cache_dir, fingerprint, backend)
    if target.is_file():
        return target
    folder = target.parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = folder.parent / f".{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        if backend == "onnx":
            export_fp32(model_path, scratch / MODEL_FILE)
        else:
            fp32 = ensure_export(model_path, fingerprint, "onnx", cache_dir)
            quantize_int8(fp32, scratch / MODEL_FILE)
        try:
            os.rename(scratch, folder)
        except OSError:  # another process finished the same export first
            shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target


def session_options(threads: int | None):
    """One session per process; `threads` None lets onnxruntime use the physical cores."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def tokenizer_settings(model_path: Path) -> dict:
    try:
        return json.loads((model_path / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return {}


def fast_tokenizer(model_path: Path, max_length: int):
    """The model's `tokenizer.json`, truncating at `max_length` and padding each batch to its
    longest text, as `AutoTokenizer(..., padding=True, truncation=True)` does."""
    from tokenizers import Tokenizer

    if not (model_path / "tokenizer.json").is_file():
        raise ModelError(f"{model_path} has no tokenizer.json (a fast tokenizer): use torch")
    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    settings = tokenizer_settings(model_path)
    pad_token = settings.get("pad_token", "[PAD]")
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad_token), pad_token=pad_token)
    return tokenizer


def model_limits(model_path: Path) -> tuple[int, int]:
    """Hidden size and the maximum sequence length sentence-transformers would use, read from
    the folder's JSON files (no transformers import)."""
    config = json.loads((model_path / "config.json").read_text())
    settings = tokenizer_settings(model_path)
    tokenizer = SimpleNamespace(**{k: v for k, v in settings.items() if k == "model_max_length"})
    length = max_sequence_length(model_path, tokenizer, SimpleNamespace(**config))
    return int(config["hidden_size"]), length


class OnnxMeanPoolingModel:
    """`light.MeanPoolingModel`, with the transformer run by onnxruntime instead of torch."""

    def __init__(self, model_path: Path, onnx_file: Path, threads: int | None = None) -> None:
        import onnxruntime

        self.hidden_size, self.max_seq_length = model_limits(model_path)
        self.tokenizer = fast_tokenizer(model_path, self.max_seq_length)
        self.session = onnxruntime.InferenceSession(
            str(onnx_file), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.input_names = {node.name for node in self.session.get_inputs()}

    def get_sentence_embedding_dimension(self) -> int:
        return self.hidden_size

    def encode(
        self, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE, **_: object
    ) -> np.ndarray:
        """Unit vectors, batched by length (less padding), mean-pooled over real tokens."""
        order = np.argsort([-len(text) for text in texts], kind="stable")
        vectors = np.zeros((len(texts), self.hidden_size), np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            feeds = self.feeds([texts[i] for i in rows])
            (hidden,) = self.session.run(["last_hidden_state"], feeds)
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            vectors[rows] = pooled / np.maximum(norms, 1e-12)
        return vectors

    def feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The graph's inputs for one batch: ids, attention mask and type ids, int64."""
        encodings = self.tokenizer.encode_batch(texts)
        arrays = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        return {
            name: np.asarray(values, dtype=np.int64)
            for name, values in arrays.items()
            if name in self.input_names
        }
