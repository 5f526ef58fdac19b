"""Remote inputs and export targets against a real S3 API on loopback (moto's server).

Nothing leaves the machine: the endpoint is moto on 127.0.0.1, the credentials are dummies
and the EC2 metadata lookup (a link-local address) is turned off.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner import remote
from batchrunner.uris import Uri, as_source
from tests.helpers import TEST_KEY, read_results, run_cli

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.fakeserver import FakeServer

BUCKET = "bucket"
ROWS = 40


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with one bucket, for the module."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client of the bucket; this process's (and its children's) AWS environment
    points at moto, with dummy credentials and no metadata lookups."""
    import boto3

    for name, value in _aws_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return boto3.client("s3", endpoint_url=s3_endpoint)


def _aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": endpoint,
    }


def _base(api: FakeServer) -> dict[str, str]:
    return {"CAICAINI_BASE": api.base_url}


def _rows(n: int, tag: str = "") -> list[dict[str, Any]]:
    return [{"id": f"r{i:03d}", "prompt": f"remote prompt {tag}{i}", "n": i} for i in range(n)]


def _put_parquet(s3: Any, key: str, rows: list[dict[str, Any]]) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    s3.put_object(Bucket=BUCKET, Key=key, Body=sink.getvalue())


def _cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    """`batchrunner ARGS` as a child process (the environment is the test's, AWS_* too)."""
    env = {**os.environ, "CAICAINI_API_KEY": TEST_KEY}
    cmd = [sys.executable, "-m", "batchrunner", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_run_from_s3_parquet_completes_and_refuses_a_replaced_object(
    s3: Any, fake_api: FakeServer, tmp_path: Path
) -> None:
    """`run s3://bucket/in.parquet` completes (child process, fake API); the same command
    again sends nothing; once the object is replaced, the resume is refused with exit 2
    and no request is sent."""
    _put_parquet(s3, "in.parquet", _rows(ROWS))
    out = tmp_path / "run"
    args = ["run", f"s3://{BUCKET}/in.parquet", "-o", str(out), "--base-url", fake_api.base_url]
    first = _cli([*args, "-q"])
    assert first.returncode == 0, first.stderr
    results = read_results(out)
    assert [r["id"] for r in results] == [f"r{i:03d}" for i in range(ROWS)]
    assert [r["n"] for r in results] == list(range(ROWS))  # carried through, from S3
    assert all(r["status"] == "succeeded" for r in results)
    assert fake_api.stats()["answers_total"] == ROWS
    stored = json.loads((out / "manifest.json").read_text())["fingerprint"]["input"]
    assert stored["uri"] == f"s3://{BUCKET}/in.parquet" and stored["etag"]

    again = _cli([*args, "-q"])
    assert again.returncode == 0, again.stderr
    assert fake_api.stats()["answers_total"] == ROWS

    _put_parquet(s3, "in.parquet", _rows(ROWS, tag="new "))
    replaced = _cli([*args, "-q"])
    assert replaced.returncode == 2, replaced.stderr
    assert "holds a different run" in replaced.stderr and "input." in replaced.stderr
    assert fake_api.stats()["answers_total"] == ROWS  # nothing sent


def test_run_from_s3_jsonl_gzip_jsonl_and_zstd_csv(
    s3: Any, shared_api: FakeServer, tmp_path: Path
) -> None:
    """JSONL objects, plain and .gz, and a .csv.zst (decompressed by the name as read),
    read as local files are."""
    import gzip

    import zstandard

    text = "".join(json.dumps(r) + "\n" for r in _rows(5))
    csv = "id,prompt\n" + "".join(f"r{i:03d},csv prompt {i}\n" for i in range(5))
    s3.put_object(Bucket=BUCKET, Key="p.jsonl", Body=text.encode())
    s3.put_object(Bucket=BUCKET, Key="p.jsonl.gz", Body=gzip.compress(text.encode()))
    s3.put_object(Bucket=BUCKET, Key="p.csv.zst", Body=zstandard.compress(csv.encode()))
    for key in ("p.jsonl", "p.jsonl.gz", "p.csv.zst"):
        out = tmp_path / key
        res = run_cli(["run", f"s3://{BUCKET}/{key}", "-o", str(out), "-q"], env=_base(shared_api))
        assert res.exit_code == 0, res.stderr
        assert [r["id"] for r in read_results(out)] == [f"r{i:03d}" for i in range(5)]


def test_python_api_reads_an_s3_uri(
    s3: Any, shared_api: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`batchrunner.run("s3://...")` keeps the URI whole (no Path folding it to s3:/...)."""
    import batchrunner

    text = "".join(json.dumps(r) + "\n" for r in _rows(3))
    s3.put_object(Bucket=BUCKET, Key="api.jsonl", Body=text.encode())
    monkeypatch.setenv("CAICAINI_API_KEY", TEST_KEY)
    result = batchrunner.run(
        f"s3://{BUCKET}/api.jsonl", output=tmp_path / "run", base_url=shared_api.base_url
    )
    assert result.succeeded == 3
    assert result.table.column("id").to_pylist() == ["r000", "r001", "r002"]


def test_export_to_s3_writes_the_lines(s3: Any, shared_api: FakeServer, tmp_path: Path) -> None:
    """`export -o s3://bucket/out.jsonl` puts the same lines as export to stdout."""
    text = "".join(json.dumps(r) + "\n" for r in _rows(7))
    src = tmp_path / "in.jsonl"
    src.write_text(text)
    out = tmp_path / "run"
    ran = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url])
    assert ran.exit_code == 0, ran.stderr
    local = run_cli(["export", str(out), "--format", "jsonl"])
    res = run_cli(["export", str(out), "--format", "jsonl", "-o", f"s3://{BUCKET}/out.jsonl"])
    assert res.exit_code == 0, res.stderr
    body = s3.get_object(Bucket=BUCKET, Key="out.jsonl")["Body"].read().decode()
    assert body == local.stdout
    assert len(body.splitlines()) == 7


def test_run_directory_must_be_local(s3: Any, tmp_path: Path) -> None:
    """`run -o s3://...` is refused (exit 2), saying why, before anything is read."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "prompt": "x"}) + "\n")
    res = run_cli(["run", str(src), "-o", f"s3://{BUCKET}/run"])
    assert res.exit_code == 2
    assert "atomic rename and fsync" in res.stderr


def test_remote_errors_show_no_signature(s3: Any, tmp_path: Path) -> None:
    """A missing object named by a pre-signed URL: exit 2, and the query string (the
    signature) appears nowhere in the output."""
    secret = "X-Amz-Signature=deadbeefSECRET"
    res = run_cli(["run", f"s3://{BUCKET}/missing.jsonl?{secret}", "-o", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert f"s3://{BUCKET}/missing.jsonl" in res.stderr
    assert "SECRET" not in res.stderr + res.stdout


def test_unknown_scheme_is_refused(tmp_path: Path) -> None:
    res = run_cli(["run", "ftp://host/in.jsonl", "-o", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "ftp:// is not read here" in res.stderr


def test_remote_identity_is_size_etag_mtime_head_and_tail(s3: Any) -> None:
    """The fingerprint of an object: size, ETag, mtime and a sha256 of the size, the first
    MiB and the last MiB. A change in the middle leaves that hash alone (the ETag tells);
    a change in the tail changes it."""
    mib = 1 << 20
    body = bytearray(os.urandom(3 * mib))
    s3.put_object(Bucket=BUCKET, Key="big.bin", Body=bytes(body))
    uri = Uri(f"s3://{BUCKET}/big.bin")
    first = remote.identity(uri)
    expected = hashlib.sha256(len(body).to_bytes(8, "little") + body[:mib] + body[-mib:])
    assert first["size"] == 3 * mib
    assert first["sha256"] == expected.hexdigest()
    assert first["etag"] and isinstance(first["mtime_ns"], int)
    assert remote.moved(uri, first) is None

    body[int(1.5 * mib)] ^= 0xFF  # the middle: not hashed
    s3.put_object(Bucket=BUCKET, Key="big.bin", Body=bytes(body))
    middle = remote.identity(uri)
    assert middle["sha256"] == first["sha256"]
    assert middle["etag"] != first["etag"]
    assert remote.moved(uri, first) == f"{uri} was replaced after the run began"

    body[-1] ^= 0xFF  # the tail
    s3.put_object(Bucket=BUCKET, Key="big.bin", Body=bytes(body))
    assert remote.identity(uri)["sha256"] != first["sha256"]


def test_uri_parsing_keeps_uris_whole_and_hides_query_strings() -> None:
    uri = as_source("s3://b/dir//x.parquet?X-Amz-Signature=abc")
    assert isinstance(uri, Uri)
    assert uri.text == "s3://b/dir//x.parquet?X-Amz-Signature=abc"
    assert str(uri) == "s3://b/dir//x.parquet"
    assert uri.suffixes == [".parquet"]
    assert str(as_source("gs://b/k.jsonl")) == "gs://b/k.jsonl"
    assert not isinstance(as_source("local/s3:x.jsonl"), Uri)


def test_job_file_input_may_be_a_uri_and_output_may_not(tmp_path: Path) -> None:
    """`[job] input = "s3://..."` is kept whole (not made relative to the job file);
    `[job] output = "s3://..."` is refused, saying why."""
    from batchrunner.config import load_job
    from batchrunner.errors import ConfigError

    job = tmp_path / "job.toml"
    job.write_text('[job]\ninput = "s3://b/in.jsonl"\noutput = "run"\n')
    spec = load_job(job, input_path=None, output=None, overrides={})
    assert spec.input == Uri("s3://b/in.jsonl")
    job.write_text('[job]\ninput = "in.jsonl"\noutput = "s3://b/run"\n')
    with pytest.raises(ConfigError, match="atomic rename and fsync"):
        load_job(job, input_path=None, output=None, overrides={})


def test_uri_shown_without_user_info() -> None:
    uri = Uri("https://user:pw@host.example:8443/a/b.jsonl?sig=1#frag")
    assert str(uri) == "https://host.example:8443/a/b.jsonl"


@pytest.mark.slow
def test_object_replaced_during_the_run_stops_it(s3: Any, tmp_path: Path) -> None:
    """The object replaced while the run goes: the run stops with exit 3 ("the input
    changed under the run") instead of finishing as if nothing happened; rows on the
    wire are recorded, the rest stay pending."""
    from tests.fakeserver import FakeServer
    from tests.helpers import start_run, status_json, wait_for_traffic

    rows = 60
    _put_parquet(s3, "moving.parquet", _rows(rows))
    out = tmp_path / "run"
    with FakeServer("--latency", "0.2", api_key=TEST_KEY) as server:
        uri = f"s3://{BUCKET}/moving.parquet"
        proc = start_run(uri, out, server.base_url, "--concurrency", "2")
        wait_for_traffic(out, proc)
        _put_parquet(s3, "moving.parquet", _rows(rows, tag="other "))
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    assert "the input changed under the run" in stderr
    assert status_json(out)["pending"] > 0


def test_azure_uris_name_the_container_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """`az://CONTAINER/KEY` takes the account from AZURE_STORAGE_ACCOUNT_NAME; the abfs
    form names it in the URI. Only the filesystem is built here: nothing is sent."""
    import pyarrow.fs as pafs

    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acct")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "a2V5")  # base64, as Azure keys are
    for text in ("az://cont/dir/k.jsonl", "abfs://cont@acct.dfs.core.windows.net/dir/k.jsonl"):
        fs, path = remote.filesystem(Uri(text))
        assert isinstance(fs, pafs.AzureFileSystem)
        assert path == "cont/dir/k.jsonl"


def test_python_api_refuses_a_remote_run_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """`batchrunner.run(..., output="s3://...")`: ConfigError saying why, nothing written."""
    import batchrunner
    from batchrunner.errors import ConfigError

    monkeypatch.setenv("CAICAINI_API_KEY", TEST_KEY)
    with pytest.raises(ConfigError, match="atomic rename and fsync"):
        batchrunner.run([{"id": "a", "prompt": "x"}], output="s3://b/run")
