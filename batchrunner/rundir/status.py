"""`read_status`: what a run dir holds, from its files alone, while a run writes or not.

Read-only: it reads the manifest, parts and journal segments (replay.py's one replay, with
no converter) and probes the lock with a shared non-blocking flock released at once, so
it is safe while a run is writing and correct at any moment. It never writes, repairs or
quarantines anything (the writer's recovery does that on open), and imports no module
that writes the run dir (writer, journal, recovery, results).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from batchrunner.errors import OutputError
from batchrunner.rundir.doneset import DoneSet
from batchrunner.rundir.manifest import read_manifest
from batchrunner.rundir.replay import listing, replay

if TYPE_CHECKING:
    from pathlib import Path

_RELIST_TRIES = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStatus:
    """Counts of a run dir; `running` is true while a live process holds its lock."""

    total: int
    succeeded: int
    errored: int
    pending: int
    complete: bool
    running: bool
    warnings: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "warnings": list(self.warnings)})


def _lock_held(path: Path) -> bool:
    try:
        fd = os.open(path / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops our shared lock, so a starting run is not refused
    return False


def read_status(path: Path) -> RunStatus:
    """Count what run dir `path` holds, from its files alone (safe during a run)."""
    manifest = read_manifest(path)
    if manifest is None:
        raise OutputError(f"{path} is not a batchrunner run directory (no manifest.json)")
    total = manifest.total_rows
    running = _lock_held(path)
    for _ in range(_RELIST_TRIES):
        done, warnings = DoneSet(total), list[str]()
        # A listed file vanished: the writer committed or quarantined meanwhile; list again.
        with contextlib.suppress(FileNotFoundError):
            replay(listing(path), done, warnings, live=running)
            break
    else:
        raise OutputError(f"{path} kept changing while being read; try again")
    counts = done.counts()
    return RunStatus(
        total=total,
        succeeded=counts.succeeded,
        errored=counts.errored,
        pending=counts.pending,
        complete=counts.pending == 0,
        running=running,
        warnings=tuple(warnings),
    )
