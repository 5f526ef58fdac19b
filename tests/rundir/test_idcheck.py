"""The assembly's duplicate-id check: exact, in bounded memory, spilled to unnamed files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from batchrunner.errors import IntegrityError
from batchrunner.rundir import idcheck
from batchrunner.rundir.idcheck import IdCheck
from tests.helpers import commit_all, make_result, open_run


def _ids(n: int, start: int = 0) -> pa.Array:
    return pa.array([f"row-{i}" for i in range(start, start + n)], pa.string())


def _open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def test_partitions_spill_to_unnamed_files_and_find_a_repeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many partitions, each spilled to its own file: a repeated id is found, counted,
    and the files leave no name in the directory and no descriptor open after close."""
    monkeypatch.setattr(idcheck, "PARTITION_ROWS", 64)
    monkeypatch.setattr(idcheck, "SPILL_ROWS", 8)
    fds = _open_fds()
    check = IdCheck(1000, tmp_path)
    assert check._mask == 15  # 1 000 ids at 64 a partition: 16 partitions
    windows = [_ids(500), _ids(499, start=500), pa.array(["row-7", "row-7"], pa.string())]
    for window in windows:
        check.add(window)
    assert _open_fds() > fds + 8 and list(tmp_path.iterdir()) == []
    assert check.duplicates(windows) == {"row-7": 3}
    check.close()
    assert _open_fds() == fds


def test_no_repeat_means_nothing_is_read_again(tmp_path: Path) -> None:
    """Unique ids: `duplicates` never reads the ids again (a re-read would raise here)."""

    def never() -> pa.Array:
        raise AssertionError("read again")
        yield  # pragma: no cover

    check = IdCheck(10, tmp_path)
    check.add(_ids(10))
    assert check.duplicates(never()) == {}


def test_a_collision_of_hashes_is_not_a_duplicate(tmp_path: Path) -> None:
    """A weak digest makes distinct ids share a hash: only the real repeat is reported."""

    def by_length(value: object) -> int:
        return len(str(value))

    check = IdCheck(10, tmp_path, digest=by_length)
    window = pa.array(["aa", "bb", "cc", "aa", "xyz"], pa.string())
    check.add(window)
    assert check.duplicates([window]) == {"aa": 2}


def test_finalize_refuses_a_duplicate_spread_over_spilled_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run dir's own finalize, its check spilled to files: the twin is named, no
    results.parquet is written, no temporary file is left in the run dir."""
    monkeypatch.setattr(idcheck, "PARTITION_ROWS", 16)
    monkeypatch.setattr(idcheck, "SPILL_ROWS", 2)
    run = tmp_path / "run"
    with open_run(run, total=200) as rd:
        for i in range(200):
            rd.record(make_result(i, id="twin" if i in (3, 197) else f"id-{i}"))
        commit_all(rd)
        with pytest.raises(IntegrityError, match=r"1 id\(s\) belong to more than one row"):
            rd.finalize({})
    assert not (run / "results.parquet").exists()
    assert sorted(p.name for p in run.iterdir()) == ["journal", "lock", "manifest.json", "parts"]
