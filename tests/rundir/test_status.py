"""read_status: counts from the run dir alone, right at any moment, never writing."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

import pytest

from batchrunner.errors import OutputError
from batchrunner.rundir import lines, read_status, replay
from batchrunner.rundir import status as status_module
from batchrunner.rundir.journal import encode_result
from tests.helpers import commit_all, make_result, open_run

if TYPE_CHECKING:
    from pathlib import Path


def _counts(path: Path) -> tuple[int, int, int]:
    st = read_status(path)
    return st.succeeded, st.errored, st.pending


def test_status_follows_every_step_of_a_writing_run(tmp_path: Path) -> None:
    """Records, seals and commits show up at once; running is true while the lock is held."""
    run = tmp_path / "run"
    rd = open_run(run, total=5)
    st = read_status(run)
    assert (st.total, st.pending, st.complete, st.running) == (5, 5, False, True)
    rd.record(make_result(0))
    rd.record(make_result(1, "errored"))
    assert _counts(run) == (1, 1, 3)
    sealed = rd.seal()
    assert sealed is not None
    assert _counts(run) == (1, 1, 3)
    rd.commit(sealed)
    assert _counts(run) == (1, 1, 3)
    for i in (2, 3, 4):
        rd.record(make_result(i))
    st = read_status(run)
    assert (st.succeeded, st.errored, st.pending, st.complete) == (4, 1, 0, True)
    rd.close()
    assert read_status(run).running is False


def test_status_skips_a_torn_line_and_counts_part_plus_segment_once(tmp_path: Path) -> None:
    """A torn tail is not counted; a part and its leftover segment count once."""
    run = tmp_path / "run"
    with open_run(run) as rd:
        rd.record(make_result(0))
        commit_all(rd)
    (run / "journal" / "seg-000001.jsonl").write_bytes(encode_result(make_result(0)))
    (run / "journal" / "seg-000002.jsonl").write_bytes(
        encode_result(make_result(1, "errored")) + b"garbage\n" + b'{"_index":2,"id":"r2"'
    )
    st = read_status(run)
    assert (st.succeeded, st.errored, st.pending) == (1, 1, 8)
    assert len(st.warnings) == 2 and all("seg-000002.jsonl" in w for w in st.warnings)
    assert "incomplete last line" in st.warnings[0] and "not an outcome" in st.warnings[1]


def test_status_relists_when_a_segment_is_committed_while_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment that becomes a part between listing and reading is counted exactly once."""
    run = tmp_path / "run"
    rd = open_run(run)
    for i in range(3):
        rd.record(make_result(i))
    sealed = rd.seal()
    assert sealed is not None
    real = lines.segment_outcomes
    calls: list[int] = []

    def racing(path: Path, *, torn: list[str] | None) -> tuple[list[int], list[bool], list[str]]:
        calls.append(1)
        if len(calls) == 1:
            rd.commit(sealed)  # the writer wins the race: the listed segment is gone
        return real(path, torn=torn)

    monkeypatch.setattr(replay, "segment_outcomes", racing)
    assert _counts(run) == (3, 0, 7)
    assert len(calls) == 1 and (run / "parts" / "part-000001.parquet").exists()
    rd.close()


def test_status_during_a_concurrent_writer_never_over_or_under_counts(tmp_path: Path) -> None:
    """While another thread records, seals and commits, each count lies between before/after."""
    run = tmp_path / "run"
    total = 3000
    rd = open_run(run, total=total)
    recorded = 0
    stop = threading.Event()

    def write() -> None:
        nonlocal recorded
        for i in range(total):
            rd.record(make_result(i))
            recorded += 1
            if i % 97 == 96:
                commit_all(rd)
        stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen: list[int] = []
    try:
        while not stop.is_set() or not seen:
            before = recorded
            st = read_status(run)
            after = recorded
            # +1: a line is on disk a moment before record() returns and the count moves
            assert before <= st.succeeded <= after + 1 and st.errored == 0
            seen.append(st.succeeded)
    finally:
        writer.join()
        rd.close()
    assert seen == sorted(seen)
    assert read_status(run).succeeded == total


def test_status_changes_nothing_in_the_run_dir(tmp_path: Path) -> None:
    """Reading status writes, repairs and removes nothing (not even the torn tail or .tmp)."""
    run = tmp_path / "run"
    with open_run(run) as rd:
        rd.record(make_result(0))
    (run / "parts" / "part-000009.parquet.tmp").write_bytes(b"half")
    (run / "parts" / "part-000008.parquet").write_bytes(b"broken")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}
    st = read_status(run)
    assert st.succeeded == 1 and any("part-000008" in w for w in st.warnings)
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_status_of_a_directory_that_is_not_a_run_dir_fails(tmp_path: Path) -> None:
    """Without a manifest, status refuses with OutputError."""
    with pytest.raises(OutputError, match="not a batchrunner run directory"):
        read_status(tmp_path)


def test_to_json_has_the_counts() -> None:
    """to_json gives the counts, flags and warnings as a JSON object."""
    st = status_module.RunStatus(
        total=3, succeeded=1, errored=1, pending=1, complete=False, running=True
    )
    assert json.loads(st.to_json()) == {
        "total": 3,
        "succeeded": 1,
        "errored": 1,
        "pending": 1,
        "complete": False,
        "running": True,
        "warnings": [],
    }
