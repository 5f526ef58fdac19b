"""`batchrunner merge`: shard runs in separate processes joined in input order, and refusals."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from batchrunner.fakeapi import answer_for
from batchrunner.merge import merge
from batchrunner.rundir import StoredSummary
from batchrunner.rundir.parts import BUCKET_ROWS
from batchrunner.sharding import shard_of
from tests.fakeserver import FakeServer
from tests.helpers import (
    TEST_KEY,
    make_result,
    open_run,
    read_results,
    run_cli,
    start_run,
    status_json,
    write_jsonl,
)

if TYPE_CHECKING:
    from pathlib import Path

ROWS = 3000


def _shards(src: Path, tmp_path: Path, base_url: str, n: int = 3) -> list[Path]:
    """`run --shard i/n` for every i, each in its own process, all at once."""
    dirs = [tmp_path / f"shard{i}" for i in range(n)]
    procs = [
        start_run(src, out, base_url, "--shard", f"{i}/{n}", "--concurrency", "32")
        for i, out in enumerate(dirs)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    return dirs


def test_three_shards_in_three_processes_merge_into_the_whole_run(tmp_path: Path) -> None:
    """3 000 rows as 0/3, 1/3, 2/3: 3 000 requests; merge: every row in order, its own answer;
    2 of 3 dirs or a shard of another job: exit 2, nothing written."""
    rows: list[dict[str, Any]] = [
        {"id": f"row-{i:04d}", "prompt": f"shard prompt {i}", "n": i} for i in range(ROWS)
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    with FakeServer(api_key=TEST_KEY) as server:
        dirs = _shards(src, tmp_path, server.base_url)
        prompts = Counter(entry["prompt"] for entry in server.log())
        other_src = write_jsonl(tmp_path / "other.jsonl", rows[:30])
        other = tmp_path / "other"
        proc = start_run(other_src, other, server.base_url, "--shard", "2/3")
        assert proc.communicate(timeout=60) and proc.returncode == 0
    assert sum(prompts.values()) == ROWS and set(prompts.values()) == {1}
    for i, d in enumerate(dirs):
        st = status_json(d)
        mine = sum(shard_of(r["id"], 3) == i for r in rows)
        assert (st["total"], st["succeeded"], st["shard"]) == (mine, mine, f"{i}/3")

    out = tmp_path / "merged"
    res = run_cli(["merge", "-o", str(out), *map(str, dirs)])
    assert res.exit_code == 0, res.stderr
    assert f"{ROWS} rows: {ROWS} succeeded, 0 errored" in res.stdout
    results = read_results(out)
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    for row, got in zip(rows, results, strict=True):
        assert got["status"] == "succeeded"
        assert got["text"] == answer_for(row["prompt"], max_tokens=1024)[0]
        assert got["n"] == row["n"]  # carried-through columns keep their type
    _check_readers(out, rows, src)

    for refused in ([dirs[0], dirs[2]], [dirs[0], dirs[1], other]):
        target = tmp_path / f"refused{len(refused)}"
        res = run_cli(["merge", "-o", str(target), *map(str, refused)])
        assert res.exit_code == 2
        assert ("shard 1/3 missing" if len(refused) == 2 else "same job") in res.stderr
        assert not target.exists()


def _check_readers(out: Path, rows: list[dict[str, Any]], src: Path) -> None:
    """status, report and export read the merged dir like a finished run's."""
    st = status_json(out)
    assert (st["total"], st["succeeded"], st["complete"], st["shard"]) == (
        ROWS,
        ROWS,
        True,
        "merged",
    )
    report = json.loads(run_cli(["report", str(out), "--json"]).stdout)
    assert (report["total"], report["status"]["succeeded"], report["complete"]) == (
        ROWS,
        ROWS,
        True,
    )
    exported = run_cli(["export", str(out), "--format", "jsonl"])
    assert exported.exit_code == 0
    ids = [json.loads(line)["id"] for line in exported.stdout.splitlines()]
    assert ids == [r["id"] for r in rows]
    again = run_cli(["run", str(src), "-o", str(out)])
    assert again.exit_code == 2 and "takes no runs" in again.stderr


# -- refusals, on shard dirs written directly (no API) -----------------------------------


def _shard_dir(path: Path, shard: str, positions: list[int], total: int, *, size: int = 1) -> Path:
    """A finished shard dir of `total` input rows holding `positions` (ids r<position>)."""
    fingerprint = {"input": {"size": size, "path": str(path)}, "settings": {}, "shard": shard}
    summary = StoredSummary(rows=total, extra_columns={}, shard_rows=len(positions))
    with open_run(path, total, fingerprint=fingerprint, input_summary=summary) as rd:
        for i in positions:
            rd.record(make_result(i, "succeeded" if i % 5 else "errored"))
        rd.finalize({})
    return path


def _refusal(dirs: list[Path], out: Path) -> str:
    """`merge` refuses with exit 2 and leaves -o's results.parquet (if any) as it was."""
    results = out / "results.parquet"
    before = results.read_bytes() if results.exists() else None
    res = run_cli(["merge", "-o", str(out), *map(str, dirs)])
    assert res.exit_code == 2, res.stderr
    assert (results.read_bytes() if results.exists() else None) == before
    return res.stderr


def test_merge_checks_positions_row_group_by_row_group(tmp_path: Path) -> None:
    """Rows that add up but leave a position out and hold another twice: refused, named."""
    total = BUCKET_ROWS + 10  # two buckets; the fault is in the second
    evens = [i for i in range(total) if i % 2 == 0]
    odds = [i for i in range(total) if i % 2 == 1]
    a = _shard_dir(tmp_path / "a", "0/2", evens, total)
    b = _shard_dir(tmp_path / "b", "1/2", [*odds[:-1], total - 2], total)
    said = _refusal([a, b], tmp_path / "out")
    assert f"positions {total - 1} (1 here) are in no shard dir" in said
    assert f"position {total - 2}, id 'r{total - 2}'" in said


def test_merge_refuses_unfinished_doubled_and_foreign_dirs(tmp_path: Path) -> None:
    """Pending rows, a shard twice, another input, a plain run dir, -o at a run dir."""
    a = _shard_dir(tmp_path / "a", "0/2", [0, 2], 4)
    b = _shard_dir(tmp_path / "b", "1/2", [1, 3], 4)
    out = tmp_path / "out"
    assert "shard 0/2 is given 2 times" in _refusal([a, a, b], out)
    other = _shard_dir(tmp_path / "c", "1/2", [1, 3], 4, size=2)
    assert "input.size: 1 -> 2" in _refusal([a, other], out)
    plain = tmp_path / "plain"
    with open_run(plain, 4) as rd:
        rd.finalize({})
    assert "not run with --shard" in _refusal([a, plain], out)
    assert "is a run directory" in _refusal([a, b], plain)
    unfinished = tmp_path / "d"
    summary = StoredSummary(rows=4, extra_columns={}, shard_rows=2)
    fingerprint = {"input": {"size": 1}, "settings": {}, "shard": "1/2"}
    with open_run(unfinished, 4, fingerprint=fingerprint, input_summary=summary) as rd:
        rd.record(make_result(1))
    assert "not finished (1 of 2 rows pending)" in _refusal([a, unfinished], out)
    assert "is one of the shard dirs" in _refusal([a, b], b)


def test_merge_joins_run_json_and_can_be_run_again(tmp_path: Path) -> None:
    """Shards with run.json give a merged one (job, every invocation); a merge may be redone."""
    a = _shard_dir(tmp_path / "a", "0/2", [0, 2, 4], 5)
    b = _shard_dir(tmp_path / "b", "1/2", [1, 3], 5)
    pricing = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
    for d in (a, b):
        run_json = {"job": {"pricing": pricing}, "invocations": [{"started": d.name}]}
        (d / "run.json").write_text(json.dumps(run_json))
    out = tmp_path / "out"
    first = merge([a, b], out)
    assert (first.rows, first.succeeded, first.errored) == (5, 4, 1)
    again = merge([b, a], out)
    assert again.rows == 5
    merged = json.loads((out / "run.json").read_text())
    assert merged["job"]["pricing"] == pricing
    assert [(i["started"], i["shard"]) for i in merged["invocations"]] == [
        ("b", "1/2"),
        ("a", "0/2"),
    ]
    assert pq.read_table(out / "results.parquet").column("id").to_pylist() == [
        f"r{i}" for i in range(5)
    ]
    report = json.loads(run_cli(["report", str(out), "--json"]).stdout)
    assert report["cost"]["pricing_from"] == str(out / "run.json")
    assert (report["status"]["errored"], report["status"]["pending"]) == (1, 0)


@pytest.mark.parametrize("name", ["results.parquet", "notes.txt"])
def test_merge_into_a_dir_a_stopped_merge_left(tmp_path: Path, name: str) -> None:
    """A dir with only what a merge writes is taken; one with other files is refused."""
    a = _shard_dir(tmp_path / "a", "0/2", [0], 2)
    b = _shard_dir(tmp_path / "b", "1/2", [1], 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("left over")
    if name == "notes.txt":
        assert "holds other files (notes.txt)" in _refusal([a, b], out)
    else:
        assert merge([a, b], out).rows == 2
