"""Segments into parts, checked; and recovery of a run dir on open (the writer's side).

`to_part` is the one way a journal segment may become a part: it writes part N from the
segment's lines and then reads the part back from disk; the caller deletes the segment
only once that part holds every row index of every line (else IntegrityError, segment
kept). `recover` runs replay.py's replay with a converter that finishes what a crash
interrupted: each segment becomes a part, unreadable parts go to quarantine/. No lock,
manifest or HTTP logic (writer.py's job).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.errors import IntegrityError
from batchrunner.rundir.files import disk_errors, fsync_dir, list_numbered
from batchrunner.rundir.lines import parse_lines, read_chunks, segment_outcomes
from batchrunner.rundir.parts import conform_part, is_unreadable, read_part_outcomes, write_part
from batchrunner.rundir.replay import listing, replay

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

    from batchrunner.rundir.doneset import DoneSet
    from batchrunner.rundir.parts import PartInfo, PartOutcomes


def to_part(
    parts_dir: Path, seq: int, tables: Iterable[pa.Table], *, run_dir: Path, source: str
) -> PartOutcomes | None:
    """Write part `seq` from `tables` (parsed lines of `source`) and check it on disk.

    Returns None when the tables hold no row (then no part is written). Raises
    IntegrityError when the part read back lacks an index the lines hold.
    """
    expected: set[int] = set()

    def counted() -> Iterator[pa.Table]:
        for table in tables:
            expected.update(table.column("_index").to_pylist())
            yield table

    written = write_part(parts_dir, seq, counted(), run_dir=run_dir)
    if written is None:
        if expected:
            raise _short(seq, source, 0, len(expected))
        return None
    try:
        found = read_part_outcomes(seq, written.info.path)
    except Exception as exc:
        if not is_unreadable(exc):
            raise
        raise _short(seq, source, 0, len(expected)) from exc
    if list(found.indices) != written.indices or set(found.indices) != expected:
        raise _short(seq, source, len(set(found.indices) & expected), len(expected))
    return written


def _short(seq: int, source: str, held: int, wanted: int) -> IntegrityError:
    return IntegrityError(
        f"part {seq} holds {held} of the {wanted} rows of {source}; {source} was kept "
        "and will be converted again when the same command is run again"
    )


def drop_segment(segment: Path, *, run_dir: Path) -> None:
    """Delete a segment whose part is checked, durably."""
    with disk_errors(run_dir):
        segment.unlink(missing_ok=True)
        fsync_dir(segment.parent)


def quarantine(run_dir: Path, part: Path, reason: str, warnings: list[str]) -> None:
    """Move an unreadable part to quarantine/ (never delete it): its rows become pending."""
    qdir = run_dir / "quarantine"
    qdir.mkdir(exist_ok=True)
    target = qdir / part.name
    n = 0
    while target.exists():
        n += 1
        target = qdir / f"{part.name}.{n}"
    part.replace(target)
    fsync_dir(qdir)
    fsync_dir(part.parent)
    warnings.append(
        f"{part.name} is unreadable ({reason}); moved to quarantine/{target.name}, "
        "its rows will be sent again"
    )


def _remove_tmp(*dirs: Path) -> None:
    for d in dirs:
        with contextlib.suppress(FileNotFoundError):
            for leftover in d.glob("*.tmp"):
                leftover.unlink(missing_ok=True)


def _segment_tables(segment: Path, warnings: list[str]) -> Iterator[pa.Table]:
    for offset, data in read_chunks(segment, torn=warnings):
        table, misfits = parse_lines(data, offset=offset, name=segment.name)
        warnings.extend(misfits)
        yield table


def _settle(
    parts_dir: Path, part: PartOutcomes, segment: Path, *, run_dir: Path, warnings: list[str]
) -> PartOutcomes:
    """A crash between a part's rename and its segment's unlink left both: keep the union.

    The usual case (the part holds every index of the segment) only deletes the segment.
    Otherwise the part is rebuilt from its rows followed by the segment's (last wins).
    """
    indices, _, bad = segment_outcomes(segment)
    if not bad and set(indices) <= set(part.indices):
        segment.unlink()
        return part
    old = conform_part(pq.read_table(part.info.path))  # maybe of an older layout
    merged = pa.concat_tables([old, *_segment_tables(segment, warnings)])
    rebuilt = to_part(parts_dir, part.info.seq, [merged], run_dir=run_dir, source=segment.name)
    assert rebuilt is not None  # the old part had rows
    segment.unlink()
    return rebuilt


class _Recovery:
    """replay.Converter for the writer: repair while replaying, under the run dir's lock."""

    def __init__(self, run_dir: Path, warnings: list[str]) -> None:
        self.run_dir = run_dir
        self.warnings = warnings

    def unreadable(self, part: Path, reason: str) -> None:
        quarantine(self.run_dir, part, reason, self.warnings)

    def convert(self, seq: int, part: PartOutcomes | None, segment: Path) -> PartOutcomes | None:
        parts_dir = self.run_dir / "parts"
        if part is not None:
            return _settle(parts_dir, part, segment, run_dir=self.run_dir, warnings=self.warnings)
        tables = _segment_tables(segment, self.warnings)
        written = to_part(parts_dir, seq, tables, run_dir=self.run_dir, source=segment.name)
        segment.unlink()
        return written


def recover(path: Path, done: DoneSet, warnings: list[str]) -> tuple[list[PartInfo], int]:
    """Replay parts and segments in sequence order into `done`; turn segments into parts.

    Returns the parts and the next free sequence number. Raises IntegrityError for a
    segment line that is not an outcome or a part that cannot hold its segment's rows.
    """
    parts_dir, journal_dir = path / "parts", path / "journal"
    parts_dir.mkdir(exist_ok=True)
    journal_dir.mkdir(exist_ok=True)
    _remove_tmp(path, parts_dir, journal_dir)
    found = listing(path)
    quarantined = [n for n, _ in list_numbered(path / "quarantine", "part", ".parquet")]
    infos = replay(found, done, warnings, converter=_Recovery(path, warnings))
    if any(f.segment is not None for f in found):
        fsync_dir(journal_dir)  # the segments' unlinks, once for all
    next_seq = max([*(f.seq for f in found), *quarantined], default=0) + 1
    return infos, next_seq
