"""recorded.py: the outcomes of a run dir, from results.parquet or from parts + segments."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.errors import OutputError
from batchrunner.records import Result
from batchrunner.rundir import read_status
from batchrunner.rundir.journal import encode_result
from batchrunner.rundir.parts import BUCKET_ROWS
from batchrunner.rundir.recorded import COLUMNS, Recorded, read_recorded
from tests.helpers import commit_all, open_run

if TYPE_CHECKING:
    from pathlib import Path


def _result(i: int, status: str = "succeeded", text: str = "") -> Result:
    return Result(
        index=i,
        id=f"r{i}",
        status=status,  # type: ignore[arg-type]
        text=text or f"answer {i}",
        attempts=1,
        completed_at_us=1_700_000_000_000_000 + i,
    )


def _rows(
    path: Path, columns: tuple[str, ...] = ("id", "status", "text")
) -> list[dict[str, object]]:
    tables = list(read_recorded(path, columns))
    return pa.concat_tables(tables).to_pylist() if tables else []


def test_parts_and_segments_merge_in_input_order_last_outcome_wins(tmp_path: Path) -> None:
    """Part 1 + segment 2 (torn tail, a row recorded twice) + a stale copy of segment 1."""
    run = tmp_path / "run"
    rd = open_run(run, total=10)
    for i in (4, 0, 2):
        rd.record(_result(i))
    rd.record(_result(1, "errored"))
    commit_all(rd)  # part 1: rows 0, 1, 2, 4
    rd.record(_result(1, "succeeded", "retried"))  # segment 2: a later outcome of row 1
    rd.record(_result(3, "errored"))
    rd.record(_result(3, "succeeded", "second"))  # twice in one segment: the last one wins
    # A crash between the rename of part 1 and the unlink of its segment: the part wins.
    (run / "journal" / "seg-000001.jsonl").write_bytes(encode_result(_result(0, "errored", "old")))
    with (run / "journal" / "seg-000002.jsonl").open("ab") as fh:
        fh.write(encode_result(_result(5))[:20])  # a torn last line: not an outcome
    rows = _rows(run)
    assert rows == [
        {"id": "r0", "status": "succeeded", "text": "answer 0"},
        {"id": "r1", "status": "succeeded", "text": "retried"},
        {"id": "r2", "status": "succeeded", "text": "answer 2"},
        {"id": "r3", "status": "succeeded", "text": "second"},
        {"id": "r4", "status": "succeeded", "text": "answer 4"},
    ]
    st = read_status(run)
    assert st.succeeded + st.errored == len(rows)
    rd.close()


def test_every_result_column_comes_with_its_results_type(tmp_path: Path) -> None:
    """By default every results.parquet column, typed as there, from parts and segments."""
    run = tmp_path / "run"
    with open_run(run, total=3) as rd:
        rd.record(_result(0))
        commit_all(rd)
        rd.record(_result(1, "errored"))
        recorded = Recorded(run)
        table = pa.concat_tables(list(recorded.tables()))
    assert table.schema == recorded.schema()
    assert tuple(table.column_names) == COLUMNS
    assert table.column("completed_at").type == pa.timestamp("us", tz="UTC")
    assert recorded.warnings == []


def test_many_windows_stream_in_order_and_later_parts_win(tmp_path: Path) -> None:
    """Rows over three index windows: part 2 overrides some of part 1; order is input order."""
    total = 2 * BUCKET_ROWS + 500
    run = tmp_path / "run"
    with open_run(run, total=total) as rd:
        for i in reversed(range(total)):
            rd.record(_result(i))
        commit_all(rd)
        for i in range(0, total, 999):
            rd.record(_result(i, "errored"))
        commit_all(rd)
        for i in range(7, total, 4001):
            rd.record(_result(i, "errored"))  # segment 3 stays in the journal
        tables = list(read_recorded(run, ("id", "status")))
    assert len(tables) == 3  # one table per window: memory stays at a window
    rows = pa.concat_tables(tables).to_pylist()
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(total)]
    errored = {int(str(r["id"])[1:]) for r in rows if r["status"] == "errored"}
    assert errored == set(range(0, total, 999)) | set(range(7, total, 4001))


def test_results_parquet_is_used_when_current_and_not_when_a_resume_added_outcomes(
    tmp_path: Path,
) -> None:
    """Complete: read from results.parquet; a resume's new outcomes win over the stale file."""
    run = tmp_path / "run"
    with open_run(run, total=3) as rd:
        for i in range(3):
            rd.record(_result(i, "errored" if i == 1 else "succeeded"))
        rd.finalize({})
    for part in (run / "parts").iterdir():
        part.unlink()  # only results.parquet can give the rows now
    assert [r["status"] for r in _rows(run)] == ["succeeded", "errored", "succeeded"]
    # A resume with --retry-errors records a new outcome for row 1 and is killed.
    with open_run(run, total=3) as rd:
        rd.record(_result(1, "succeeded", "now fine"))
        assert [r["text"] for r in _rows(run)] == ["now fine"]  # results.parquet is stale
        commit_all(rd)
        results = run / "results.parquet"
        part = next((run / "parts").iterdir())
        os.utime(results, ns=(part.stat().st_mtime_ns - 10**9,) * 2)
        assert [r["text"] for r in _rows(run)] == ["now fine"]  # a newer part: stale still


def test_a_smaller_total_leaves_out_rows_past_it(tmp_path: Path) -> None:
    """After a resume with a smaller --limit, rows past the new total are not recorded rows."""
    run = tmp_path / "run"
    with open_run(run, total=5) as rd:
        for i in range(5):
            rd.record(_result(i))
        rd.finalize({})
    with open_run(run, total=2) as rd:
        assert [r["id"] for r in _rows(run)] == ["r0", "r1"]  # from results.parquet
        rd.record(_result(0, "errored"))
        assert [r["id"] for r in _rows(run)] == ["r0", "r1"]  # from parts + segment


def test_an_unreadable_part_is_skipped_with_a_warning_and_nothing_changes(tmp_path: Path) -> None:
    """A broken part (say, quarantined on the next open) is left out, named in warnings."""
    run = tmp_path / "run"
    with open_run(run, total=4) as rd:
        rd.record(_result(0))
        rd.record(_result(1))
    (run / "parts" / "part-000009.parquet").write_bytes(b"broken")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    recorded = Recorded(run, ("id",))
    assert pa.concat_tables(list(recorded.tables())).column("id").to_pylist() == ["r0", "r1"]
    assert any("part-000009" in w for w in recorded.warnings)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_part_of_an_older_layout_gives_nulls_for_columns_it_lacks(tmp_path: Path) -> None:
    """A part without a column the results now have reads that column as nulls."""
    run = tmp_path / "run"
    with open_run(run, total=2) as rd:
        rd.record(_result(0))
        commit_all(rd)
    part = run / "parts" / "part-000001.parquet"
    pq.write_table(pq.read_table(part).drop_columns(["stop_reason"]), part)
    rows = _rows(run, ("id", "stop_reason"))
    assert rows == [{"id": "r0", "stop_reason": None}]


def test_a_directory_without_manifest_or_a_wrong_column_is_refused(tmp_path: Path) -> None:
    """Not a run dir: OutputError; a column that is not a result column: ValueError."""
    with pytest.raises(OutputError, match="not a batchrunner run directory"):
        list(read_recorded(tmp_path))
    with pytest.raises(ValueError, match="not result columns"):
        list(read_recorded(tmp_path, ("id", "_index")))
