"""The ONNX encoder backends (issue 18): each exports once into the cache, loads, encodes and
agrees with torch on a fixed slice of real titles and postings (cosine >= 0.99 for fp32 ONNX,
>= 0.97 for int8), and `--encoder-backend` reaches `search` and `label`.

The export is made once per test session in a temporary cache (fp32 then int8: seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from onet_llm.api import Labeler
from onet_llm.cli import app
from onet_llm.errors import InputError, ModelError
from onet_llm.settings import Settings
from onet_llm.shortlist.encoder import Encoder
from onet_llm.shortlist.onnx import MODEL_FILE, export_folder

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="session")
def export_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose index cache holds this session's exports (the index itself comes from
    the package)."""
    home = tmp_path_factory.mktemp("onnx-home")
    for backend in ("onnx", "onnx-int8"):
        Encoder("default", backend=backend, export_cache_dir=home / "index").encode(["warm up"])
    return home


@pytest.fixture(scope="session")
def fixed_slice() -> list[str]:
    """The first 40 dev-ad titles, 10 postings with 600 characters of body, and edge cases:
    an empty text, an accent, and a text longer than the model's 256 tokens."""
    ads = pd.read_csv(REPO / "eval/data/dev_ads.csv", dtype=str, keep_default_na=False)
    titles = ads["title"].tolist()[:40]
    postings = [f"{t}. {b[:600]}" for t, b in zip(ads["title"][:10], ads["body"][:10], strict=True)]
    long_text = "Staff Accountant. " + "Reconcile accounts and close the books. " * 80
    return titles + postings + ["", "Caf\u00e9 cook", long_text]


@pytest.fixture(scope="session")
def torch_vectors(fixed_slice: list[str]) -> np.ndarray:
    return Encoder("default").encode(fixed_slice)


@pytest.mark.parametrize(("backend", "floor"), [("onnx", 0.99), ("onnx-int8", 0.97)])
def test_onnx_backends_agree_with_torch(
    backend: str, floor: float, export_home: Path, fixed_slice: list[str], torch_vectors
):
    encoder = Encoder("default", backend=backend, export_cache_dir=export_home / "index")
    vectors = encoder.encode(fixed_slice)
    assert vectors.shape == torch_vectors.shape and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    cosines = (vectors * torch_vectors).sum(axis=1)
    assert cosines.min() >= floor, (backend, float(cosines.min()), int(cosines.argmin()))
    if backend == "onnx":  # the same graph in fp32: the same vectors, to float tolerance
        assert np.abs(vectors - torch_vectors).max() < 1e-4


def test_the_tokenizer_gives_the_ids_transformers_gives(fixed_slice: list[str]):
    from transformers import AutoTokenizer

    from onet_llm.shortlist.onnx import fast_tokenizer, model_limits

    path = Encoder("default").path
    _, max_length = model_limits(path)
    reference = AutoTokenizer.from_pretrained(str(path))(
        fixed_slice, padding=True, truncation=True, max_length=max_length
    )
    encodings = fast_tokenizer(path, max_length).encode_batch(fixed_slice)
    assert [e.ids for e in encodings] == reference["input_ids"]
    assert [e.attention_mask for e in encodings] == reference["attention_mask"]
    assert [e.type_ids for e in encodings] == reference["token_type_ids"]


def test_a_cached_export_encodes_without_importing_torch(export_home: Path):
    """The memory and start-up the ONNX backends save come from never loading torch."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from onet_llm.shortlist.encoder import Encoder\n"
        f"cache = Path({str(export_home / 'index')!r})\n"
        "Encoder('default', backend='onnx-int8', export_cache_dir=cache).encode(['Welder'])\n"
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_the_export_is_cached_by_fingerprint_and_backend(export_home: Path):
    fingerprint = Encoder("default").fingerprint
    files = {}
    for backend in ("onnx", "onnx-int8"):
        folder = export_folder(export_home / "index", fingerprint, backend)
        assert folder.name.startswith(f"{fingerprint}-{backend}-")
        files[backend] = folder / MODEL_FILE
        assert files[backend].is_file()
    assert files["onnx-int8"].stat().st_size < files["onnx"].stat().st_size / 3
    written = {path: path.stat().st_mtime_ns for path in files.values()}
    Encoder("default", backend="onnx-int8", export_cache_dir=export_home / "index").encode(["x"])
    assert {path: path.stat().st_mtime_ns for path in files.values()} == written
    leftovers = [p.name for p in (export_home / "index" / "encoders").iterdir()]
    assert sorted(leftovers) == sorted(p.parent.name for p in files.values())  # no scratch


def test_int8_keeps_only_the_first_ffn_output_projection_in_fp32(export_home: Path):
    """The real export: 36 MatMuls with a weight, 35 quantised; the one left in fp32 is layer
    0's FFN output (its GELU input has the widest range; chosen on validation, eval/int8.md)."""
    import onnx

    fingerprint = Encoder("default").fingerprint
    folder = export_folder(export_home / "index", fingerprint, "onnx-int8")
    graph = onnx.load(str(folder / MODEL_FILE)).graph
    weights = {tensor.name for tensor in graph.initializer}
    float_matmuls = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and any(name in weights for name in node.input)
    ]
    assert float_matmuls == ["/model/encoder/layer.0/output/dense/MatMul"]
    assert sum(node.op_type == "MatMulInteger" for node in graph.node) == 35


def test_fp32_matmuls_picks_the_lowest_layer_by_number_not_by_text():
    from onet_llm.shortlist.onnx import fp32_matmuls

    names = [
        "/model/encoder/layer.10/output/dense/MatMul",
        "/model/encoder/layer.2/attention/output/dense/MatMul",
        "/model/encoder/layer.2/output/dense/MatMul",
        "/model/encoder/layer.2/intermediate/dense/MatMul",
    ]
    assert fp32_matmuls(names) == ["/model/encoder/layer.2/output/dense/MatMul"]
    assert fp32_matmuls(["/model/pooler/dense/MatMul"]) == []
    assert fp32_matmuls(["/model/head/output/dense/MatMul"]) == []  # no numbered layer


def test_an_int8_encoder_builds_indexes_with_exact_vectors(export_home: Path):
    int8 = Encoder("default", backend="onnx-int8", export_cache_dir=export_home / "index")
    exact = int8.exact()
    assert exact.backend == "onnx" and exact.fingerprint == int8.fingerprint
    assert int8.backend == "onnx-int8"  # the sibling is a copy, not a change
    assert Encoder("default").exact().backend == "torch"


def test_a_bad_backend_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ModelError, match="unknown encoder backend"):
        Encoder("default", backend="tensorrt")
    monkeypatch.setenv("ONET_LLM_ENCODER_BACKEND", "int4")
    with pytest.raises(InputError, match="ONET_LLM_ENCODER_BACKEND: expected one of auto, torch"):
        Settings.load()
    monkeypatch.setenv("ONET_LLM_ENCODER_BACKEND", "onnx-int8")
    monkeypatch.setenv("ONET_LLM_ENCODER_THREADS", "1")
    monkeypatch.setenv("ONET_LLM_ENCODER_BATCH_SIZE", "16")
    assert Settings.load().encoder_options() == {
        "backend": "onnx-int8",
        "threads": 1,
        "batch_size": 16,
    }
    monkeypatch.setenv("ONET_LLM_ENCODER_BATCH_SIZE", "0")
    with pytest.raises(InputError, match="ONET_LLM_ENCODER_BATCH_SIZE must be at least 1"):
        Settings.load()
    result = runner.invoke(app, ["search", "Welder", "--encoder-backend", "int4"])
    assert result.exit_code == 2 and "int4" in result.output


def test_search_and_label_run_on_the_int8_backend(
    export_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ONET_LLM_ENCODER_THREADS", "1")  # one thread, small batches: as fast
    monkeypatch.setenv("ONET_LLM_ENCODER_BATCH_SIZE", "16")  # on a shared machine (README)
    int8 = ["--encoder-backend", "onnx-int8", "--home", str(export_home)]
    result = runner.invoke(app, ["search", "Registered Nurse", "-n", "3", "--json", *int8])
    assert result.exit_code == 0, result.output
    assert '"onet_code": "29-1141.00"' in result.output.split('"rank": 2')[0]
    postings = tmp_path / "postings.csv"
    postings.write_text("id,title\np1,Registered Nurse\np2,Forklift Operator\n")
    result = runner.invoke(app, ["label", str(postings), "-o", str(tmp_path / "out.csv"), *int8])
    assert result.exit_code == 0, result.output
    labels = pd.read_csv(tmp_path / "out.csv", dtype=str)
    api = Labeler(home=export_home, encoder_backend="onnx-int8")
    encoder = api._labeler.encoder
    assert (encoder.backend, encoder.threads, encoder.batch_size) == ("onnx-int8", 1, 16)
    searched = api.search(["Registered Nurse", "Forklift Operator"], size=1)
    # int8 may swap near-ties (Forklift Operator: 0.705 vs 0.702 under torch): same backend
    assert labels["onet_code_1"].tolist() == [r.matches[0].onet_code for r in searched]
    assert labels["onet_code_1"][0] == "29-1141.00"


def test_eval_records_the_backend_it_encoded_with(export_home: Path, tmp_path: Path):
    out = tmp_path / "report"
    int8 = ["--encoder-backend", "onnx-int8", "--home", str(export_home)]
    result = runner.invoke(app, ["eval", "--sample", "20", "--resamples", "100", "--out", str(out),
                                 *int8])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["encoder_backend"] == "onnx-int8" and metrics["rows"] == 20
    assert "Queries encoded with the `onnx-int8` backend." in (out / "report.md").read_text()


def test_auto_is_fp32_onnx_where_it_can_run_and_torch_elsewhere(
    export_home: Path, monkeypatch: pytest.MonkeyPatch
):
    """`auto`, the settings' default, changes speed only: onnx for the shipped (plain
    mean-pooling) model with a cache folder for its export, torch without one, for a model
    the light path cannot run, or when onnxruntime is missing."""
    from onet_llm.cli.choices import EncoderBackend
    from onet_llm.settings import _CHOICES
    from onet_llm.shortlist import onnx

    cache = export_home / "index"
    assert Settings.load().encoder_backend == "auto"
    assert Settings.load().encoder_options()["backend"] == "auto"
    assert tuple(_CHOICES["encoder_backend"]) == onnx.ENCODER_BACKENDS
    assert tuple(choice.value for choice in EncoderBackend) == onnx.ENCODER_BACKENDS
    assert Encoder("default", backend="auto", export_cache_dir=cache).backend == "onnx"
    assert Encoder("default", backend="auto").backend == "torch"  # nowhere to export to
    assert Encoder("default", backend="auto", light=False, export_cache_dir=cache).backend == (
        "torch"
    )
    with pytest.raises(ModelError, match="needs a plain mean-pooling model folder"):
        Encoder("default", backend="onnx", light=False, export_cache_dir=cache)
    monkeypatch.setattr(onnx, "onnxruntime_available", lambda: False)
    assert Encoder("default", backend="auto", export_cache_dir=cache).backend == "torch"


def test_the_default_backend_labels_as_torch_does_and_shares_its_runs(
    export_home: Path, tmp_path: Path
):
    """The default (auto: fp32 ONNX) and torch label the same rows with the same codes and
    scores to float tolerance; they count as the same run (a torch run resumes on onnx), and
    only int8's approximate vectors make a run of their own."""
    from types import SimpleNamespace

    from onet_llm.cli.label import run_fingerprint

    postings = REPO / "examples" / "postings.csv"
    outputs = {}
    for backend in ("auto", "torch"):
        outputs[backend] = tmp_path / f"{backend}.csv"
        home = ["--home", str(export_home), "--encoder-backend", backend]
        result = runner.invoke(app, ["label", str(postings), "-o", str(outputs[backend]), *home])
        assert result.exit_code == 0, result.output
    default, torch = (pd.read_csv(outputs[b]) for b in ("auto", "torch"))
    codes = [c for c in default.columns if c.startswith("onet_code_")]
    scores = [c for c in default.columns if c.startswith("score_")]
    assert codes and scores and len(default) == 20
    assert default[codes].equals(torch[codes])
    assert np.abs(default[scores].to_numpy() - torch[scores].to_numpy()).max() < 1e-4

    def fingerprint(backend: str) -> dict:
        encoder = SimpleNamespace(model_id="default@abc", backend=backend)
        return run_fingerprint(SimpleNamespace(encoder=encoder))

    assert fingerprint("onnx") == fingerprint("torch") == {"model": "default@abc"}
    assert fingerprint("onnx-int8") == {"model": "default@abc", "encoder_backend": "onnx-int8"}


def test_the_first_run_says_it_exports_and_later_runs_do_not(tmp_path: Path):
    """The first use of the ONNX backend exports the model (seconds): the run says so before
    labelling, rather than pausing silently and counting the export as labelling time."""
    postings = REPO / "examples" / "postings.csv"
    notices = []
    for run in ("first", "second"):
        out = tmp_path / f"{run}.csv"
        arguments = ["label", str(postings), "-o", str(out), "--home", str(tmp_path)]
        result = runner.invoke(app, arguments)
        assert result.exit_code == 0, result.output
        assert len(pd.read_csv(out)) == 20
        notices.append("exporting the model to ONNX" in result.output)
    assert notices == [True, False]
    encoder = Encoder("default", backend="auto", export_cache_dir=tmp_path / "index")
    assert encoder.backend == "onnx" and not encoder.export_pending
    assert not Encoder("default", backend="torch", export_cache_dir=tmp_path).export_pending
