"""CSV/TSV inputs through pyarrow.csv, and `--format` for a name that does not tell."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from batchrunner.fakeapi import answer_for
from batchrunner.inputs.readers import iter_records
from tests.helpers import TEST_KEY, read_results, run_cli

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fakeserver import FakeServer

CSV = (
    "id,prompt,score\n"
    'a,"Hello, world?",3\n'
    'b,"two\nlines",\n'  # a quoted newline, and an empty number: not given
    "c,plain,5\n"
)
PROMPTS = {"a": "Hello, world?", "b": "two\nlines", "c": "plain"}


def _check(out: Path) -> list[dict[str, object]]:
    results = read_results(out)
    assert [r["id"] for r in results] == ["a", "b", "c"]
    for got in results:
        assert got["status"] == "succeeded", got
        assert got["text"] == answer_for(PROMPTS[str(got["id"])], max_tokens=1024)[0]
    return results


def test_csv_by_its_name_runs_and_carries_typed_columns(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(CSV, encoding="utf-8")
    out = tmp_path / "d"
    result = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url])
    assert result.exit_code == 0, result.output
    results = _check(out)
    assert [r["score"] for r in results] == [3, None, 5]
    assert pq.read_schema(out / "results.parquet").field("score").type == pa.int64()
    assert len(shared_api.log()) == 3


def test_format_tsv_and_parquet_for_names_that_do_not_tell(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """Without --format such a name is exit 2 naming the flag; with it, the file runs."""
    src = tmp_path / "rows.txt"
    src.write_text(CSV.replace(",", "\t").replace('"Hello\t world?"', '"Hello, world?"'))
    out = tmp_path / "d"
    refused = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url])
    assert refused.exit_code == 2
    assert "--format" in refused.stderr
    args = ["run", str(src), "-o", str(out), "--base-url", shared_api.base_url]
    result = run_cli([*args, "--format", "tsv"])
    assert result.exit_code == 0, result.output
    _check(out)
    blob = tmp_path / "rows.bin"
    pq.write_table(pa.Table.from_pylist([{"id": k, "prompt": v} for k, v in PROMPTS.items()]), blob)
    args = ["run", str(blob), "-o", str(tmp_path / "p"), "--base-url", shared_api.base_url]
    result = run_cli([*args, "--format", "parquet"])
    assert result.exit_code == 0, result.output
    _check(tmp_path / "p")


def test_csv_from_stdin_is_kept_as_a_csv_copy(tmp_path: Path, shared_api: FakeServer) -> None:
    out = tmp_path / "d"
    env = {**os.environ, "CAICAINI_API_KEY": TEST_KEY}
    cmd = [sys.executable, "-m", "batchrunner", "run", "-", "-o", str(out), "-q"]
    cmd += ["--base-url", shared_api.base_url, "--format", "csv"]
    done = subprocess.run(cmd, env=env, input=CSV.encode(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "stdin.csv.zst").is_file()
    _check(out)
    parquet = subprocess.run(
        [*cmd[:-1], "parquet"], env=env, input=b"x", capture_output=True, timeout=120
    )
    assert parquet.returncode == 2
    assert b"cannot be read from stdin" in parquet.stderr


def test_a_format_that_is_none_of_them_is_refused(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text('[job]\ninput = "x.csv"\noutput = "d"\nformat = "xml"\n')
    result = run_cli(["run", "--job", str(job)])
    assert result.exit_code == 2
    assert "format must be one of jsonl, csv, tsv, parquet" in result.stderr


def test_compressed_csv_is_read_by_its_name(tmp_path: Path) -> None:
    """`.csv.gz` and `.csv.zst`: pyarrow decompresses by the name's last suffix."""
    data = b"id,prompt\na,hi\n"
    (tmp_path / "x.csv.gz").write_bytes(gzip.compress(data))
    (tmp_path / "x.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    for name in ("x.csv.gz", "x.csv.zst"):
        records = [record for record, _ in iter_records(tmp_path / name)]
        assert records == [{"id": "a", "prompt": "hi"}]
