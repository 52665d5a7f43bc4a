"""Issue 14's measurement with a local LLM: several `onet-llm eval` runs against one llama.cpp
server (started once: loading the model takes a while on a loaded machine).

    python benchmarks/eval_infer_local.py --plan PLAN.json [--llm qwen] [--model-cache DIR]

PLAN.json is a list of runs, each {"out": "eval/reports/NAME", "args": ["--data", ...]}: the
`onet-llm eval` flags of that run. Runs go in order and share the store named by
ONET_LLM_STORE (or the default one), so a later run whose rows are a prefix of an earlier
run's (same seed, smaller --sample) gets the infer calls from the cache, and a rerun of the
whole plan makes no LLM call. Each run's exit code and wall time are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.eval_local_llm import MODELS  # noqa: E402
from benchmarks.local_llm import local_llm_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--llm", choices=sorted(MODELS), default="qwen")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-cache", type=Path, default=None, help="Where the GGUF lives.")
    args = parser.parse_args()
    plan = json.loads(args.plan.read_text())
    alias, locate = MODELS[args.llm]
    model_path = locate(args.model_cache) if args.llm == "qwen" and args.model_cache else locate()
    started = time.perf_counter()
    failures = 0
    with local_llm_server(model_path, threads=args.threads, alias=alias) as base_url:
        print(f"serving {model_path.name} at {base_url}", flush=True)
        environment = dict(os.environ, OPENAI_BASE_URL=base_url, OPENAI_API_KEY="local")
        for run in plan:
            command = [
                sys.executable, "-m", "onet_llm.cli", "eval", "--out", run["out"],
                "--llm-model", alias, "--concurrency", "1", *run["args"],
            ]  # fmt: skip
            run_started = time.perf_counter()
            print(f"$ {' '.join(command[2:])}", flush=True)
            result = subprocess.run(command, env=environment, cwd=REPO, check=False)
            failures += result.returncode != 0
            print(
                f"exit code {result.returncode} in {time.perf_counter() - run_started:.0f}s",
                flush=True,
            )
    print(f"plan finished in {time.perf_counter() - started:.0f}s, {failures} failed runs")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
