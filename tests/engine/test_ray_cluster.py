"""`label --engine ray --ray-address ADDRESS`: a driver that joins a cluster started before it,
as on real machines (`ray start --head`, `ray start --address`). The cluster here is two Ray
nodes on this machine (`ray.cluster_utils.Cluster`, one CPU each): real raylets and a real GCS,
not a mock, but one host, so it shows the connection and the scheduling, not the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from onet_llm.cli import app
from tests.engine.test_ray_engine import example_rows

pytest.importorskip("ray")
CODES = [f"onet_code_{k}" for k in (1, 2, 3)]


def test_a_job_joins_an_existing_two_node_cluster_and_gives_the_local_labels(tmp_path: Path):
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    postings = tmp_path / "postings.csv"
    example_rows(5).to_csv(postings, index=False)  # 100 rows
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        command = [sys.executable, "-m", "onet_llm.cli", "label", str(postings),
                   "--engine", "ray", "--ray-address", cluster.address, "--shard-rows", "25",
                   "-o", str(tmp_path / "cluster.csv"), "--store", str(tmp_path / "c.duckdb"),
                   "--work-dir", str(tmp_path / "work")]  # fmt: skip
        joined = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert joined.returncode == 0, joined.stdout[-2000:] + joined.stderr[-2000:]
        nodes = subprocess.run(
            [sys.executable, "-c", "import ray, sys; ray.init(address=sys.argv[1], "
             "log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))",
             cluster.address],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        cluster.shutdown()
    local = CliRunner().invoke(
        app,
        ["label", str(postings), "-o", str(tmp_path / "local.csv"),
         "--store", str(tmp_path / "l.duckdb")],
        catch_exceptions=False,
    )  # fmt: skip
    assert local.exit_code == 0, local.output
    got, expected = (pd.read_csv(tmp_path / name) for name in ("cluster.csv", "local.csv"))
    assert got[["id", *CODES]].equals(expected[["id", *CODES]])
    assert (got["score_1"] - expected["score_1"]).abs().max() < 1e-4
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())
    assert nodes.stdout.strip().splitlines()[-1] == "2", nodes.stderr[-1000:]
