"""Helpers shared by the storage tests: Results, their journal lines, and parts on disk."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchrunner.records import Result
from batchrunner.rundir.journal import encode_result
from batchrunner.rundir.lines import parse_lines
from batchrunner.rundir.parts import write_part

if TYPE_CHECKING:
    from pathlib import Path

    from batchrunner.rundir import parts as part_files


def make_result(i: int, status: str = "succeeded", **kw: object) -> Result:
    return Result(index=i, id=f"r{i}", status=status, completed_at_us=1_000_000 * i, **kw)  # type: ignore[arg-type]


def journal_lines(results: list[Result]) -> bytes:
    return b"".join(encode_result(r) for r in results)


def make_part(tmp_path: Path, seq: int, results: list[Result]) -> part_files.PartOutcomes:
    parts = tmp_path / "parts"
    parts.mkdir(exist_ok=True)
    table, warnings = parse_lines(journal_lines(results))
    assert warnings == []
    written = write_part(parts, seq, [table], run_dir=tmp_path)
    assert written is not None
    return written
