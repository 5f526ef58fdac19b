"""The run dir's file layer: one atomic write, directory fsync, disk errors, numbered files.

`atomic_write` is the only way a whole file (manifest, part, results) comes into being:
written under `NAME.tmp`, fsynced, renamed over `NAME`, and the directory fsynced, so a
reader sees the old file, the complete new one, or nothing; never half of one. Journal
segments are the one exception (appended in place, see journal.py). No pyarrow, no JSON.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from typing import TYPE_CHECKING

from batchrunner.errors import DiskError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from io import BufferedWriter
    from pathlib import Path

_DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM, errno.EFBIG}
_ADVICE = {
    errno.ENOSPC: "free space",
    errno.EDQUOT: "free space",
    errno.EFBIG: "free space",
}


def to_disk_error(exc: OSError, run_dir: Path) -> DiskError | None:
    """Translate a "the disk refuses" OSError into DiskError; None for anything else."""
    if exc.errno not in _DISK_ERRNOS:
        return None
    reason = os.strerror(exc.errno) if exc.errno is not None else str(exc)
    advice = _ADVICE.get(exc.errno or 0, "make it writable")
    return DiskError(
        f"cannot write to {run_dir}: {reason}; {advice} and run the same command again to resume"
    )


def disk_errors(run_dir: Path) -> _DiskErrors:
    """A context manager that re-raises disk-refusal OSErrors (ENOSPC, EROFS, EACCES,
    EDQUOT) as DiskError."""
    return _DiskErrors(run_dir)


class _DiskErrors:
    """`disk_errors`, written out: the journal enters one per outcome, and a generator
    context manager costs ~1 µs more each time."""

    __slots__ = ("run_dir",)

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, OSError):
            mapped = to_disk_error(exc, self.run_dir)
            if mapped is not None:
                raise mapped from exc


def fsync_dir(path: Path) -> None:
    """Make renames and unlinks inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Discard(Exception):
    """Raised inside `atomic_write` to drop the temp file and leave the target as it was."""


@contextlib.contextmanager
def atomic_write(final: Path, *, run_dir: Path) -> Iterator[BufferedWriter]:
    """A binary file that replaces `final` whole when the block ends, or not at all.

    The block writes into `final.tmp`; on a clean exit that is flushed, fsynced, renamed
    over `final` and the directory fsynced. On any exception (Discard included, which is
    then swallowed) the temp file is removed and `final` is left as it was. Disk refusals
    become DiskError naming `run_dir`.
    """
    tmp = final.with_name(final.name + ".tmp")
    try:
        with disk_errors(run_dir):
            with tmp.open("wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(final)
            fsync_dir(final.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if not isinstance(exc, Discard):
            raise


def numbered_path(directory: Path, prefix: str, seq: int, suffix: str) -> Path:
    """`directory/prefix-NNNNNN.suffix`: segment and part N share N."""
    return directory / f"{prefix}-{seq:06d}{suffix}"


def list_numbered(directory: Path, prefix: str, suffix: str) -> list[tuple[int, Path]]:
    """`prefix-NNNNNN.suffix` files in `directory`, sorted by number (missing dir: none)."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+){re.escape(suffix)}")
    found: list[tuple[int, Path]] = []
    try:
        names = [p.name for p in directory.iterdir()]
    except FileNotFoundError:
        return found
    for name in names:
        m = pattern.fullmatch(name)
        if m:
            found.append((int(m.group(1)), directory / name))
    found.sort()
    return found


def segment_path(journal_dir: Path, seq: int) -> Path:
    return numbered_path(journal_dir, "seg", seq, ".jsonl")


def list_segments(journal_dir: Path) -> list[tuple[int, Path]]:
    return list_numbered(journal_dir, "seg", ".jsonl")


def part_path(parts_dir: Path, seq: int) -> Path:
    return numbered_path(parts_dir, "part", seq, ".parquet")


def list_parts(parts_dir: Path) -> list[tuple[int, Path]]:
    return list_numbered(parts_dir, "part", ".parquet")
