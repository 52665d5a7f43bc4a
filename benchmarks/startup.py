"""Wall time of everyday commands, medians of N runs, with the load average beside them
(issue 15, point 1). Each command is a fresh process, as a user runs it.

    .venv/bin/python benchmarks/startup.py [--source DIR] [--repeat 3] [--fresh]

`--source` runs another checkout's code (e.g. an export of an older commit) with this venv;
`--fresh` also times `label` on an empty $ONET_LLM_HOME (a fresh install: no index cache).
The warm runs use $ONET_LLM_HOME as it is (its index cache already built).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


CPU_SECONDS: list[float] = []


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run; its CPU seconds (user + system, less sensitive to other load
    on the machine) go to CPU_SECONDS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_SECONDS.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return seconds


def report(name: str, times: list[float], load: float) -> None:
    cpu = statistics.median(CPU_SECONDS[-len(times) :])
    print(
        f"{name:32s} median {statistics.median(times):6.1f}s wall, {cpu:5.1f}s CPU  runs "
        f"{', '.join(f'{t:.1f}' for t in times)}  load {load:.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", type=Path, default=REPO)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onet-startup-"))
    postings = work / "postings20.csv"
    frame = pd.read_csv(REPO / "examples" / "postings.csv", dtype=str, keep_default_na=False)
    frame.head(20).to_csv(postings, index=False)
    env = {**os.environ, "PYTHONPATH": str(args.source), "ONET_LLM_STORE": str(work / "s.duckdb")}
    cli = [sys.executable, "-m", "onet_llm.cli"]
    cases = {
        "--help": cli + ["--help"],
        "about": cli + ["about"],
        "search 'Registered Nurse'": cli + ["search", "Registered Nurse"],
        "label 20 rows (warm)": cli + ["label", str(postings), "-o", str(work / "out.csv")],
    }
    print(f"source {args.source}; {os.cpu_count()} CPUs", flush=True)
    for name, command in cases.items():
        times = []
        for _ in range(args.repeat):
            load = os.getloadavg()[0]
            times.append(timed(command, env))
            (work / "s.duckdb").unlink(missing_ok=True)
        report(name, times, load)
    if args.fresh:
        times = []
        for _ in range(args.repeat):
            home = Path(tempfile.mkdtemp(prefix="onet-fresh-home-"))
            load = os.getloadavg()[0]
            fresh_env = {**env, "ONET_LLM_HOME": str(home)}
            command = cli + ["label", str(postings), "-o", str(work / "fresh.csv")]
            times.append(timed(command, fresh_env))
        report("label 20 rows (fresh home)", times, load)


if __name__ == "__main__":
    main()
