"""The one replay of a run dir into a done set: for each N, part N's outcomes, then segment N's.

Part N is made from segment N's lines, and segment N is deleted only once part N is
checked on disk, so both exist only for a moment (a commit between its rename and its
unlink) or after a crash in that moment. Then the segment's lines count after the part's
rows, last outcome wins: the union, which is what a checked conversion of the two holds.
An unreadable part counts as absent (its rows pending). `status` uses this as it is, and
only reads; the writer passes a Converter that also turns each segment into a part
(recovery.py). Writes nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from batchrunner.rundir.files import list_parts, list_segments
from batchrunner.rundir.lines import segment_outcomes
from batchrunner.rundir.parts import is_unreadable, read_part_outcomes

if TYPE_CHECKING:
    from pathlib import Path

    from batchrunner.rundir.doneset import DoneSet
    from batchrunner.rundir.parts import PartInfo, PartOutcomes


@dataclass(frozen=True, slots=True)
class Found:
    """Sequence number N as listed: part N and segment N, either possibly absent."""

    seq: int
    part: Path | None
    segment: Path | None


def listing(run_dir: Path) -> list[Found]:
    """Parts and segments of `run_dir` paired by sequence number, in order."""
    # Segments before parts: a segment that vanishes after this listing has become a part
    # that the later listing sees (commit renames the part before unlinking the segment).
    segments = dict(list_segments(run_dir / "journal"))
    parts = dict(list_parts(run_dir / "parts"))
    return [
        Found(seq, parts.get(seq), segments.get(seq))
        for seq in sorted(parts.keys() | segments.keys())
    ]


class Converter(Protocol):
    """What the writer adds to the replay: it repairs the files as it reads them."""

    def unreadable(self, part: Path, reason: str) -> None:
        """Deal with a part that cannot be read (its rows then count as pending)."""

    def convert(self, seq: int, part: PartOutcomes | None, segment: Path) -> PartOutcomes | None:
        """Make part `seq` hold `part`'s rows then `segment`'s, delete the segment, return it."""


def replay(
    found: list[Found],
    done: DoneSet,
    warnings: list[str],
    *,
    converter: Converter | None = None,
    live: bool = False,
) -> list[PartInfo]:
    """Mark every recorded outcome in `done` (then recount); return the parts read.

    Without a converter, segments are only read: a line that is not an outcome is said in
    `warnings`, and so is a torn last line unless `live` (a run holds the lock, so bytes
    past the last newline may be a line being written). FileNotFoundError when a listed
    file vanished meanwhile: list again.
    """
    infos: list[PartInfo] = []
    for item in found:
        part = None if item.part is None else _read_part(item, warnings, converter)
        segment = item.segment
        if segment is not None and converter is not None:
            part, segment = converter.convert(item.seq, part, segment), None
        if part is not None:
            done.mark_many(part.indices, part.succeeded)
            infos.append(part.info)
        if segment is not None:
            indices, succeeded, skipped = segment_outcomes(segment, torn=None if live else warnings)
            warnings.extend(skipped)
            done.mark_many(indices, succeeded)
    done.recount()
    return infos


def _read_part(
    item: Found, warnings: list[str], converter: Converter | None
) -> PartOutcomes | None:
    assert item.part is not None
    try:
        return read_part_outcomes(item.seq, item.part, from_footer=True)
    except Exception as exc:
        if not is_unreadable(exc):
            raise
        if converter is not None:
            converter.unreadable(item.part, str(exc).splitlines()[0])
        else:
            warnings.append(f"{item.part.name} is unreadable; its rows count as pending")
        return None
