"""Wheel smoke test: what a user of `pip install onet-llm` gets, not what the checkout has.

Builds the wheel, installs it with the lock file into a fresh venv (torch first, as the Makefile
does), and from a folder outside the repository runs `onet-llm about`, `label` on the example
postings, `eval` on a shipped dataset, and `label --llm` against SmolLM2-135M served by llama.cpp
on 127.0.0.1 (the same local server the tests use). Any failure exits non-zero with the command's
output. Run with the dev venv's python: `make wheel-smoke` (also part of `.ci/run`).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.local_llm import local_llm_server, smollm2_path  # noqa: E402

LOCK = REPO / "constraints.txt"
TORCH = "torch==2.13.0"
PIP = "pip==26.3"
LLM_POSTINGS = (
    "id,title,body\n"
    "a1,Staff Accountant,Reconcile accounts and prepare the month-end close.\n"
    "a2,Truck Driver,Drive a tractor-trailer on regional routes; CDL required.\n"
)


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    print("+", " ".join(command), flush=True)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"wheel smoke: {' '.join(command)} exited {result.returncode}\n"
                 f"{result.stdout}\n{result.stderr}")  # fmt: skip
    return result.stdout


def source_copy(target: Path) -> Path:
    """The files git tracks or would track, copied: a build in the checkout itself would leave
    build/ behind and could package stale modules from an earlier build."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def build_wheel(dist: Path, env: dict[str, str]) -> Path:
    source = source_copy(dist.parent / "source")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    run([*pip_wheel, "-w", str(dist), str(source)], source, env)
    (wheel,) = dist.glob("onet_llm-*.whl")
    return wheel


def install(wheel: Path, venv: Path, env: dict[str, str]) -> Path:
    run([sys.executable, "-m", "venv", str(venv)], venv.parent, env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    run([*pip, PIP], venv.parent, env)
    run([*pip, TORCH], venv.parent, env)
    run([*pip, "-c", str(LOCK), str(wheel)], venv.parent, env)
    return venv / "bin" / "onet-llm"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="onet-llm-wheel-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONET_LLM_", "OPENAI_"))}
    # The index cache the test suite has filled (same shipped model, same key); a cold one is
    # rebuilt, which is slower but equally correct.
    env["ONET_LLM_HOME"] = os.environ.get(
        "ONET_LLM_TEST_HOME", str(REPO / ".pytest_cache" / "onet-llm-home")
    )
    env["ONET_LLM_STORE"] = str(work / "store.duckdb")
    try:
        onet_llm = install(build_wheel(work / "dist", env), work / "venv", env)
        where = work / "user"
        where.mkdir()
        about = run([str(onet_llm), "about"], where, env)
        assert "CC BY 4.0" in about, about

        shutil.copy(REPO / "examples" / "postings.csv", where / "postings.csv")
        run([str(onet_llm), "label", "postings.csv", "-o", "labels.csv"], where, env)
        labelled = rows(where / "labels.csv")
        assert len(labelled) == 20 and all(r["onet_code_1"] for r in labelled), labelled[:2]

        run([str(onet_llm), "eval", "--data", "dev-ads-test", "--sample", "10",
             "--out", "report"], where, env)  # fmt: skip
        metrics = json.loads((where / "report" / "metrics.json").read_text())
        # The default backend (auto) must resolve to fp32 ONNX from the wheel too: onnxruntime
        # and onnx are installed with it and the export runs from the installed package.
        backend = metrics["settings"]["encoder_backend"]
        assert backend == "onnx", f"the wheel's default encoder backend ran as {backend!r}"

        (where / "llm.csv").write_text(LLM_POSTINGS)
        with local_llm_server(smollm2_path(), n_ctx=2048) as base_url:
            env_llm = {**env, "ONET_LLM_MAX_TOKENS": "200"}
            run([str(onet_llm), "label", "llm.csv", "-o", "llm.labels.csv", "--llm",
                 "--base-url", base_url, "--llm-model", "smollm2-135m", "--shortlist-size", "5",
                 "--top-k", "1", "--concurrency", "1"], where, env_llm)  # fmt: skip
        reranked = rows(where / "llm.labels.csv")
        assert len(reranked) == 2 and {r["source"] for r in reranked} <= {"llm", "fallback"}
        assert any(r["source"] == "llm" for r in reranked), reranked
        print(f"wheel smoke: passed ({work})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
