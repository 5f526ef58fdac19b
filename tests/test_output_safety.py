"""Output safety: a run directory that is no directory, the input itself, or inside another
run's directory is refused with exit 2 before anything is sent or written."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import run_cli, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fakeserver import FakeServer


def _rows(n: int) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "prompt": f"question {i}?"} for i in range(n)]


def test_dash_output_is_refused_and_creates_nothing(
    tmp_path: Path, shared_api: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-o -` used to create a directory named `-`."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(3))
    monkeypatch.chdir(tmp_path)
    result = run_cli(["run", str(src), "-o", "-", "--base-url", shared_api.base_url])
    assert result.exit_code == 2, result.output
    assert "-o - is not a run directory" in result.stderr
    assert not (tmp_path / "-").exists()
    assert shared_api.log() == []


@pytest.mark.parametrize("kind", ["jsonl", "parquet-dir"])
def test_output_that_is_the_input_is_refused(
    tmp_path: Path, shared_api: FakeServer, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The input file, or the directory of Parquet files, as -o, spelled another way."""
    (tmp_path / "in").mkdir()
    if kind == "jsonl":
        target = write_jsonl(tmp_path / "in" / "a.jsonl", _rows(3))
    else:
        target = tmp_path / "in"
        pq.write_table(pa.Table.from_pylist(_rows(3)), target / "p0.parquet")
    monkeypatch.chdir(tmp_path / "in")
    before = sorted(p.name for p in (tmp_path / "in").iterdir())
    out = f"../in/{target.name}" if kind == "jsonl" else "../in"
    result = run_cli(["run", str(target), "-o", out, "--base-url", shared_api.base_url])
    assert result.exit_code == 2, result.output
    assert f"run directory {out} is the input itself" in result.stderr
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == before
    assert shared_api.log() == []


def test_output_inside_another_runs_directory_is_refused(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """A first run completes; a second one with -o under its directory is refused, and
    the first run's directory is left as it was."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(3))
    first = tmp_path / "runs" / "first"
    ok = run_cli(["run", str(src), "-o", str(first), "--base-url", shared_api.base_url])
    assert ok.exit_code == 0, ok.output
    before = sorted(p.name for p in first.iterdir())
    sent = len(shared_api.log())
    nested = first / "parts" / "deeper"
    result = run_cli(["run", str(src), "-o", str(nested), "--base-url", shared_api.base_url])
    assert result.exit_code == 2, result.output
    assert f"inside the run directory {first}" in result.stderr
    assert not nested.exists()
    assert sorted(p.name for p in first.iterdir()) == before
    assert len(shared_api.log()) == sent
    # The run's own directory is a resume, not a clash.
    again = run_cli(["run", str(src), "-o", str(first), "--base-url", shared_api.base_url])
    assert again.exit_code == 0, again.output
    assert len(shared_api.log()) == sent
