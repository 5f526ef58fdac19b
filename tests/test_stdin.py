"""Input from standard input: copied into the run directory as it is read, so a resume
(even one given no stdin at all) reads that copy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import IO, TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from batchrunner.fakeapi import answer_for
from batchrunner.rundir.stdin import STDIN_NAME
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

ROWS = 500
CONCURRENCY = 8


def _rows(n: int, tag: str = "") -> list[dict[str, str]]:
    return [{"id": f"row-{i:03d}", "prompt": f"stdin prompt {tag}{i}"} for i in range(n)]


def _run(out: Path, base_url: str, stdin: int | IO[Any], name: str = "-") -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "batchrunner", "run", name, "-o", str(out)]
    cmd += ["--base-url", base_url, "-q", "--concurrency", str(CONCURRENCY)]
    env = {**os.environ, "CAICAINI_API_KEY": TEST_KEY}
    return subprocess.Popen(
        cmd, env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.crash
def test_cat_into_run_killed_halfway_resumes_from_the_copy_with_no_stdin(
    tmp_path: Path,
) -> None:
    """`cat 500rows.jsonl | run - -o d`, kill -9 halfway, `run - -o d < /dev/null`: all 500
    answered, each id once with its own answer, at most the killed in-flight sent twice."""
    rows = _rows(ROWS)
    src = write_jsonl(tmp_path / "500rows.jsonl", rows)
    out = tmp_path / "d"
    with FakeServer(*["--latency", "0.02-0.04"], api_key=TEST_KEY) as server:
        with src.open("rb") as fh:
            cat = subprocess.Popen(["cat"], stdin=fh, stdout=subprocess.PIPE)
        assert cat.stdout is not None
        proc = _run(out, server.base_url, cat.stdout)
        cat.stdout.close()  # the runner holds the pipe's read end now
        deadline = time.monotonic() + 120
        while _lines(out / "calls.log") < ROWS // 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "the run sent too little in time"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        cat.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert not (out / "results.parquet").exists()
        assert (out / STDIN_NAME).is_file()
        sent_before = server.stats()["answers_total"]
        assert ROWS // 2 <= sent_before < ROWS
        resumed = _run(out, server.base_url, subprocess.DEVNULL)
        stdout, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err
        answers = server.stats()["answers_total"]
    assert f"{ROWS} rows: {ROWS} succeeded" in stdout
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    for row, got in zip(rows, results, strict=True):
        assert got["status"] == "succeeded"
        assert got["text"] == answer_for(row["prompt"], max_tokens=1024)[0]
    assert 0 <= answers - ROWS <= CONCURRENCY, answers


def test_resume_with_the_same_stdin_goes_on_and_other_stdin_is_refused(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """Spelled /dev/stdin this time. The same rows piped again resume (nothing sent again);
    other rows are refused with exit 2 and the copy is kept as it was."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(4))
    other = write_jsonl(tmp_path / "other.jsonl", _rows(4, tag="other "))
    out = tmp_path / "d"
    with src.open("rb") as fh:
        first = _run(out, shared_api.base_url, fh, name="/dev/stdin")
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    copy = (out / STDIN_NAME).read_bytes()
    with src.open("rb") as fh:
        again = _run(out, shared_api.base_url, fh)
        stdout, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "4 rows: 4 succeeded" in stdout  # and nothing sent again: see the log below
    with other.open("rb") as fh:
        refused = _run(out, shared_api.base_url, fh)
        _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2, err
    assert "other stdin rows" in err
    assert (out / STDIN_NAME).read_bytes() == copy
    assert not (out / f"{STDIN_NAME}.tmp").exists()
    assert len(shared_api.log()) == 4


def test_stdin_into_a_run_of_a_file_is_refused(tmp_path: Path, shared_api: FakeServer) -> None:
    """A run directory begun from a file does not become a stdin run: exit 2, no copy."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(2))
    out = tmp_path / "d"
    env = {**os.environ, "CAICAINI_API_KEY": TEST_KEY}
    base = [sys.executable, "-m", "batchrunner", "run", "-o", str(out), "-q"]
    base += ["--base-url", shared_api.base_url]
    subprocess.run([*base, str(src)], env=env, check=True, capture_output=True)
    with src.open("rb") as fh:
        refused = subprocess.run([*base, "-"], env=env, stdin=fh, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "not of stdin" in refused.stderr
    assert not (out / STDIN_NAME).exists()
