"""Run `onet-llm eval` with a local LLM served by llama.cpp on 127.0.0.1 (opt-in, offline).

    python benchmarks/eval_local_llm.py --llm qwen --sample 60 --out eval/reports/NAME \
        [--modes embedding,hybrid,cascade] [--seed 0] [-- other eval flags]

The server (see benchmarks/local_llm.py) lives for the duration of the run; the eval itself is
the real command line, pointed at the server through OPENAI_BASE_URL, so the LLM calls go
through the product's reranker and its DuckDB cache (a rerun of the same command is free).
Local models have no price: the report gives their tokens and prices them at a reference
model's list price for scale.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.local_llm import local_llm_server, qwen_path, smollm2_path  # noqa: E402

MODELS = {
    "qwen": ("qwen2.5-coder-1.5b-instruct-q4_k_m", qwen_path),
    "smollm2": ("smollm2-135m-instruct-q4_1", smollm2_path),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llm", choices=sorted(MODELS), default="qwen")
    parser.add_argument("--modes", default="embedding,hybrid,cascade")
    parser.add_argument("--sample", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-cache", type=Path, default=None, help="Where the GGUF lives.")
    parser.add_argument("extra", nargs="*", help="More `onet-llm eval` flags, after --.")
    args = parser.parse_args()

    alias, locate = MODELS[args.llm]
    model_path = locate(args.model_cache) if args.llm == "qwen" and args.model_cache else locate()
    command = [
        sys.executable,
        "-m",
        "onet_llm.cli",
        "eval",
        "--modes",
        args.modes,
        "--seed",
        str(args.seed),
        "--out",
        str(args.out),
        "--llm-model",
        alias,
        "--concurrency",
        "1",  # one llama.cpp slot on 2 cores: parallel requests only queue
        *(["--sample", str(args.sample)] if args.sample else []),
        *args.extra,
    ]
    started = time.perf_counter()
    with local_llm_server(model_path, threads=args.threads, alias=alias) as base_url:
        print(f"serving {model_path.name} at {base_url}", flush=True)
        environment = dict(os.environ, OPENAI_BASE_URL=base_url, OPENAI_API_KEY="local")
        result = subprocess.run(command, env=environment, cwd=REPO, check=False)
    print(
        f"eval finished with exit code {result.returncode} in {time.perf_counter() - started:.0f}s"
    )
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
