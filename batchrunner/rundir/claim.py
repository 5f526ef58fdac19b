"""Taking a run directory: refuse a foreign one, lock it, and claim its manifest.

The writer (`RunDir.open`) does these in order before any recovery; a `status` reader
never does (it probes the lock only).
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from batchrunner.errors import OutputError
from batchrunner.rundir import actors
from batchrunner.rundir.files import disk_errors, list_parts, list_segments
from batchrunner.rundir.given import GIVEN_NAMES
from batchrunner.rundir.manifest import NAME as MANIFEST
from batchrunner.rundir.manifest import Manifest, read_manifest, write_manifest
from batchrunner.rundir.stdin import STDIN_NAMES

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from batchrunner.rundir.manifest import StoredSummary

_OWN_NAMES = {
    "lock",
    f"{MANIFEST}.tmp",
    "journal",
    "parts",
    "quarantine",
    actors.ACTORS_DIR,
    *GIVEN_NAMES,
    *STDIN_NAMES,
}
_LOCK_TRIES = 10  # `status` probes the lock for microseconds; don't mistake that for a run


def check_foreign(path: Path) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputError(f"{path} exists and is not a directory")
    if (path / MANIFEST).exists():
        return
    names = (p.name for p in path.iterdir())
    foreign = sorted(n for n in names if n not in _OWN_NAMES and not n.startswith("."))
    if foreign:
        raise OutputError(
            f"{path} is not a batchrunner run directory (no manifest.json, but it holds "
            f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
            "choose a new or empty directory"
        )


def take_lock(path: Path) -> int:
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    for attempt in range(_LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if attempt + 1 < _LOCK_TRIES:
                time.sleep(0.02)
    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
    os.close(fd)
    raise OutputError(f"run dir {path} is in use by pid {holder}")


def recorded_any(path: Path) -> bool:
    """Whether `path` holds any outcome: a part, a journal line or results.parquet."""
    if list_parts(path / "parts") or (path / "results.parquet").exists():
        return True
    if actors.holds_outcomes(path):  # a Ray run's outcomes, not gathered yet
        return True
    return any(seg.stat().st_size > 0 for _, seg in list_segments(path / "journal"))


def claim(
    path: Path,
    lock_fd: int,
    fingerprint: Mapping[str, object],
    total_rows: int,
    summary: StoredSummary | None,
    warnings: list[str],
) -> Manifest:
    """Check (or create) the manifest, note our pid in the lock file; the manifest in force.

    A different fingerprint raises OutputError before anything is changed, unless no
    outcome is recorded yet: then the new fingerprint replaces the old (said in `warnings`).
    """
    manifest = read_manifest(path)
    if manifest is None:
        manifest = Manifest.new(fingerprint, total_rows, summary)
        write_manifest(path, manifest)
    elif manifest.merged is not None:
        # It has results.parquet but no parts: a run here would send every row again.
        raise OutputError(
            f"{path} holds the merged results of shard runs (batchrunner merge) and takes "
            "no runs; resume a shard in its own directory, or use a new output directory"
        )
    elif diff := manifest.differences(fingerprint):
        if recorded_any(path):
            raise OutputError(
                f"run dir {path} holds a different run ({'; '.join(diff)}); "
                "use a new output directory, or the original input and settings"
            )
        # Nothing is recorded here, so no outcome can be mixed with the new settings: a
        # stop's advice ("use --model X, then run the same command again") must work.
        manifest = replace(Manifest.new(fingerprint, total_rows, summary), unknown=manifest.unknown)
        write_manifest(path, manifest)
        warnings.append(
            f"no row of {path} was recorded yet: it takes this command's input and settings "
            f"({'; '.join(diff)})"
        )
    with disk_errors(path):
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
    updated = manifest.updated(total_rows=total_rows, summary=summary)
    if updated != manifest:
        write_manifest(path, updated)
    return updated
