"""`label --engine ray` on inputs that pyarrow's filesystems read (issue 18): `file://` URIs
through pyarrow's LocalFileSystem, and `s3://` on a real S3 server (moto) on 127.0.0.1. A
remote file, folder or glob gives the same files, in the same order, and the same shard rows
and one-line errors as the same files on the local disk; one small Ray run gives the local
engine's codes.

The S3 server is moto's, in a process of its own: `python -m moto.server` when moto is
installed here. It cannot be installed beside the pins in constraints.txt (botocore, which moto
needs, requires python-dateutil<3; pandas and matplotlib run here with 4.0.0), so
ONET_LLM_TEST_MOTO_SERVER may name a `moto_server` executable from an environment of its own
instead; with neither, the S3 cases are skipped, and the `file://` cases (and the Ray run, on
`file://`) still run.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.engine.shards import (
    RemoteFile,
    files_fingerprint,
    input_files,
    split_into_shards,
)
from onet_llm.errors import InputError
from onet_llm.postings import LabelOptions
from tests.engine.test_ray_engine import example_rows

runner = CliRunner()
MOTO_SERVER = "ONET_LLM_TEST_MOTO_SERVER"
SECRET = "wJalrXUtnFEMI-not-a-real-secret"


# -- where the remote files live ----------------------------------------------------------------


@dataclass
class Remote:
    """A place on a pyarrow filesystem: `put` writes a file there, `uri` names a path under it
    as a user would type it (for S3, with the endpoint in the query)."""

    filesystem: pafs.FileSystem
    root: str  # the filesystem's path of the place
    scheme: str
    query: str = ""

    def put(self, name: str, data: bytes) -> None:
        self.filesystem.create_dir(f"{self.root}/{name}".rpartition("/")[0], recursive=True)
        with self.filesystem.open_output_stream(f"{self.root}/{name}") as stream:
            stream.write(data)

    def uri(self, name: str = "") -> str:
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.root}/{name}{query}"  # file:///abs/path/name

    def shown(self, name: str) -> str:
        """The URI that messages and plan.json give for `name`: no query."""
        return f"{self.scheme}://{self.root}/{name}"


def moto_command() -> list[str] | None:
    """How to start moto's S3 server: this interpreter when moto is installed here, else the
    `moto_server` that ONET_LLM_TEST_MOTO_SERVER names; None when neither is there."""
    if importlib.util.find_spec("moto") is not None:
        return [sys.executable, "-m", "moto.server"]
    command = os.environ.get(MOTO_SERVER)
    return [command] if command else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def moto_server(**environment: str) -> Iterator[str]:
    """A real S3 server (moto) on 127.0.0.1, in its own process; yields its host:port."""
    command = moto_command()
    if command is None:
        pytest.skip(
            f"no S3 server: moto is not installed here (botocore needs python-dateutil<3, "
            f"constraints.txt pins 4.0.0) and {MOTO_SERVER} names no moto_server"
        )
    port = free_port()
    process = subprocess.Popen(
        [*command, "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **environment},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{command[-1]} did not start on 127.0.0.1:{port}")
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """host:port of one S3 server for this module (any credentials are accepted)."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's credentials, and nothing of the user's AWS set-up (no profile, no endpoint, no
    instance metadata lookups)."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


def s3_remote(endpoint: str) -> Remote:
    """A new bucket on the server; the URIs carry the endpoint in their query."""
    s3 = pafs.S3FileSystem(
        endpoint_override=endpoint,
        scheme="http",
        access_key="testing",
        secret_key=SECRET,
        region="us-east-1",
        allow_bucket_creation=True,
    )
    bucket = f"ads-{uuid.uuid4().hex[:12]}"
    s3.create_dir(bucket)
    return Remote(s3, bucket, "s3", f"endpoint_override={endpoint}&scheme=http")


def file_remote(folder: Path) -> Remote:
    folder.mkdir(parents=True, exist_ok=True)
    return Remote(pafs.LocalFileSystem(), str(folder.resolve()), "file")


@pytest.fixture(params=["file", "s3"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    """The same cases on pyarrow's LocalFileSystem (`file://`) and on S3."""
    if request.param == "file":
        return file_remote(tmp_path / "remote")
    request.getfixturevalue("s3_credentials")
    return s3_remote(request.getfixturevalue("s3_endpoint"))


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue().to_pybytes()


def jsonl_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_json(orient="records", lines=True).encode()


def put_both(remote: Remote, local: Path, name: str, data: bytes) -> None:
    """The same file on the remote filesystem and under a local folder."""
    remote.put(name, data)
    (local / name).parent.mkdir(parents=True, exist_ok=True)
    (local / name).write_bytes(data)


def shard_rows(plan) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(s.path) for s in plan.shards], ignore_index=True)


# -- listing and reading ------------------------------------------------------------------------


def test_a_remote_folder_glob_or_file_gives_the_local_files_order_and_rows(
    remote: Remote, tmp_path: Path
):
    rows = example_rows(3)  # 60 rows
    local = tmp_path / "local"
    # Path order, not string order: a/ before a-b.csv before a.csv.
    put_both(remote, local, "a/x.parquet", parquet_bytes(rows.iloc[:10]))
    put_both(remote, local, "a-b.csv", csv_bytes(rows.iloc[10:30]))
    put_both(remote, local, "a.jsonl", jsonl_bytes(rows.iloc[30:]))
    put_both(remote, local, "notes.txt", b"not a table")
    put_both(remote, local, ".hidden.csv", csv_bytes(rows.iloc[:3]))

    files = input_files(remote.uri())
    expected = input_files(str(local))
    names = [str(path.relative_to(local)) for path in expected]
    assert names == ["a/x.parquet", "a-b.csv", "a.jsonl"]
    assert all(isinstance(file, RemoteFile) for file in files)
    assert [str(file) for file in files] == [remote.shown(name) for name in names]

    options = LabelOptions(keep_columns=("body",))
    plan = split_into_shards(files, tmp_path / "work-remote", options, shard_rows=16)
    local_plan = split_into_shards(expected, tmp_path / "work-local", options, shard_rows=16)
    assert [(s.first_row, s.rows) for s in plan.shards] == [(1, 16), (17, 16), (33, 16), (49, 12)]
    pd.testing.assert_frame_equal(shard_rows(plan), shard_rows(local_plan))
    assert shard_rows(plan)["posting_id"].tolist() == rows["id"].tolist()
    assert plan.inputs == [remote.shown(name) for name in names]
    assert sorted(p.name for p in (tmp_path / "work-remote").iterdir()) == [
        "plan.json", "shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet",
        "shard-00003.parquet",
    ]  # fmt: skip  # the copies of the remote files are gone

    assert [str(f) for f in input_files(remote.uri("a*.*"))] == [
        remote.shown("a-b.csv"),
        remote.shown("a.jsonl"),
    ]
    single = input_files(remote.uri("a-b.csv"))
    assert [str(f) for f in single] == [remote.shown("a-b.csv")]
    # What typer's Path makes of the command line's `s3://...`: `s3:/...`, the same files.
    assert input_files(str(Path(remote.uri("a-b.csv")))) == single


def test_s3_endpoint_from_the_environment(
    s3_endpoint: str, s3_credentials, monkeypatch: pytest.MonkeyPatch
):
    remote = s3_remote(s3_endpoint)
    remote.put("ads/a.csv", csv_bytes(example_rows(1)))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3_endpoint}")
    files = input_files(f"s3://{remote.root}/ads/")
    assert [str(f) for f in files] == [f"s3://{remote.root}/ads/a.csv"]


def test_a_changed_remote_file_changes_the_fingerprint(remote: Remote):
    rows = example_rows(1)
    remote.put("a.csv", csv_bytes(rows))
    before = files_fingerprint(input_files(remote.uri("a.csv")))
    assert before == files_fingerprint(input_files(remote.uri("a.csv")))
    remote.put("a.csv", csv_bytes(rows.iloc[:-1]))
    after = files_fingerprint(input_files(remote.uri("a.csv")))
    assert after != before and after[0][0] == remote.shown("a.csv")
    assert after[0][1] == len(csv_bytes(rows.iloc[:-1]))


# -- errors -------------------------------------------------------------------------------------


def test_a_bad_row_in_a_remote_file_names_that_file_and_row_as_locally(
    remote: Remote, tmp_path: Path
):
    rows = example_rows(1)
    local = tmp_path / "local"
    bad = rows.iloc[10:].copy()
    bad.loc[bad.index[3], ["title", "body"]] = ""
    put_both(remote, local, "a.csv", csv_bytes(rows.iloc[:10]))
    put_both(remote, local, "b.csv", csv_bytes(bad))
    messages = []
    for files, work in ((input_files(str(local / "*.csv")), "work-local"),
                        (input_files(remote.uri("*.csv")), "work-remote")):  # fmt: skip
        with pytest.raises(InputError) as error:
            split_into_shards(files, tmp_path / work, LabelOptions(), shard_rows=8)
        messages.append(str(error.value))
    assert messages[0].startswith(f"{local / 'b.csv'}: row 14 (id ")
    assert messages[1] == messages[0].replace(str(local / "b.csv"), remote.shown("b.csv"))
    assert "\n" not in messages[1]

    remote.put("bad.jsonl", b'{"id": "1", "title": "Cook"}\nnot json\n')
    with pytest.raises(InputError) as error:
        split_into_shards(input_files(remote.uri("bad.jsonl")), tmp_path / "w", LabelOptions(), 8)
    assert str(error.value) == f"{remote.shown('bad.jsonl')}: line 2 is not valid JSON " + (
        "(Expecting value)"
    )
    remote.put("empty.csv", b"")
    with pytest.raises(InputError, match=r"empty\.csv: the file is empty$"):
        split_into_shards(input_files(remote.uri("empty.csv")), tmp_path / "w", LabelOptions(), 8)
    remote.put("notes.txt", b"not a table")
    with pytest.raises(InputError, match=r"notes\.txt: unknown extension '\.txt'"):
        split_into_shards(input_files(remote.uri("notes.txt")), tmp_path / "w", LabelOptions(), 8)


def test_remote_inputs_that_hold_nothing_are_refused_in_one_line(remote: Remote):
    remote.put("empty/notes.txt", b"not a table")
    cases = {
        "missing.csv": "missing.csv: no such file or folder",
        "missing/": "missing/: no such file or folder",
        "empty/": "holds no CSV, TSV, Parquet or JSONL file",
        "*.parquet": r"\*.parquet: the pattern matches no CSV",
        "*/a.csv": "wildcards in the last part only",
    }
    for name, message in cases.items():
        with pytest.raises(InputError, match=message) as error:
            input_files(remote.uri(name))
        assert "\n" not in str(error.value) and "?" not in str(error.value)  # no query shown
    with pytest.raises(InputError, match="^nosuch://bucket/a.csv: cannot read"):
        input_files("nosuch://bucket/a.csv")


def test_a_missing_bucket_or_an_unreachable_endpoint_is_one_line_without_secrets(
    s3_endpoint: str, s3_credentials
):
    endpoint = f"endpoint_override={s3_endpoint}&scheme=http"
    with pytest.raises(InputError) as error:
        input_files(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/ads/?{endpoint}")
    assert str(error.value).endswith("/ads/: no such file or folder")
    with pytest.raises(InputError, match="the pattern matches no"):
        input_files(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/*.csv?{endpoint}")

    closed = f"endpoint_override=127.0.0.1:{free_port()}&scheme=http"
    uri = f"s3://AKIDEXAMPLEKEY:{SECRET}-2@bucket/ads/a.csv?{closed}"
    with pytest.raises(InputError) as error:
        input_files(uri)
    message = str(error.value)
    assert message.startswith("s3://bucket/ads/a.csv: cannot read (") and "\n" not in message
    assert "NETWORK_CONNECTION" in message or "connect" in message.lower()
    for secret in (SECRET, "AKIDEXAMPLEKEY", "endpoint_override"):
        assert secret not in message


def test_refused_credentials_are_one_line_without_secrets(s3_credentials):
    with moto_server(INITIAL_NO_AUTH_ACTION_COUNT="0") as endpoint:  # moto checks credentials
        for name in ("ads/a.csv", "ads/", "*.csv"):
            with pytest.raises(InputError) as error:
                input_files(f"s3://bucket/{name}?endpoint_override={endpoint}&scheme=http")
            message = str(error.value)
            assert message.startswith(f"s3://bucket/{name}: cannot read (") and "\n" not in message
            assert "ACCESS_DENIED" in message or "INVALID_ACCESS_KEY_ID" in message
            assert SECRET not in message and "endpoint_override" not in message


def test_the_command_line_refuses_a_missing_bucket_in_one_line(s3_endpoint: str, s3_credentials):
    uri = f"s3://no-such-bucket/ads/?endpoint_override={s3_endpoint}&scheme=http"
    result = runner.invoke(app, ["label", uri, "--engine", "ray", "-o", "labels.csv"])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == "error: s3://no-such-bucket/ads/: no such file or folder"
    result = runner.invoke(app, ["label", uri, "--engine", "ray"])
    assert result.exit_code == 1
    assert "give -o for the labels" in result.output and "\n" not in result.output.strip()


# -- one run on Ray -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_the_local_engine_refuses_a_uri_in_one_line(tmp_path: Path):
    uri = f"file://{tmp_path}/ads.csv?token=abcdef"
    result = runner.invoke(app, ["label", uri, "-o", str(tmp_path / "labels.csv")])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: file://{tmp_path}/ads.csv: a URI input is read by --engine ray only "
        "(or copy it to a local file)"
    )


def test_ray_on_a_remote_input_gives_the_local_engines_codes(
    request: pytest.FixtureRequest, local_ray, tmp_path: Path
):
    """On S3 where a server is there, else on `file://`: the same plumbing either way (the
    command line's folded URI, the copy, the local shards)."""
    if moto_command() is not None:
        request.getfixturevalue("s3_credentials")
        remote = s3_remote(request.getfixturevalue("s3_endpoint"))
    else:
        remote = file_remote(tmp_path / "remote")
    rows = example_rows(5)  # 100 rows
    postings = tmp_path / "postings.csv"
    rows.to_csv(postings, index=False)
    remote.put("ads/postings.csv", postings.read_bytes())
    local = runner.invoke(app, ["label", str(postings), "-o", str(tmp_path / "local.csv")])
    assert local.exit_code == 0, local.output
    ray_csv = str(tmp_path / "ray.csv")
    result = runner.invoke(
        app, ["label", remote.uri("ads/"), "--engine", "ray", "-o", ray_csv, "--shard-rows", "40"]
    )
    assert result.exit_code == 0, result.output
    expected = pd.read_csv(tmp_path / "local.csv", dtype=str)
    got = pd.read_csv(tmp_path / "ray.csv", dtype=str)
    assert got["id"].tolist() == rows["id"].tolist() == expected["id"].tolist()
    for k in range(1, 6):
        assert got[f"onet_code_{k}"].tolist() == expected[f"onet_code_{k}"].tolist()
    # The run is recorded under the URI as shown: no query (an endpoint, a token), no keys.
    with duckdb.connect(str(tmp_path / "store.duckdb"), read_only=True) as db:
        inputs = [row[0] for row in db.execute("SELECT input_path FROM runs").fetchall()]
    assert remote.shown("ads/") in inputs
    assert not any("?" in name for name in inputs if name)
