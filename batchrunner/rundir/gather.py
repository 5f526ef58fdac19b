"""Gather the Ray actors' outcomes into the run directory: each actor directory's parts
become the run's next parts, one rename each.

Crash safety: a rename is atomic on one file system, so a part is either still in its
actor directory or already the run's, never both, and no row is counted twice by
gathering. A crash midway leaves the remaining parts where they were, for the next
gathering. An actor's unconverted journal segments are first turned into parts in its own
directory by the same recovery a run directory gets on open. The caller holds the run
directory's lock.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import TYPE_CHECKING

from batchrunner.errors import OutputError
from batchrunner.rundir.actors import actor_dirs, in_use
from batchrunner.rundir.claim import take_lock
from batchrunner.rundir.doneset import DoneSet
from batchrunner.rundir.files import disk_errors, fsync_dir, list_parts
from batchrunner.rundir.recovery import recover

if TYPE_CHECKING:
    from pathlib import Path

    from batchrunner.rundir.writer import RunDir


def wait_idle(run_dir: Path, *, timeout_s: float) -> None:
    """Wait until no actor runs a batch in `run_dir`: the actors of a killed driver may
    still be finishing theirs. OutputError, naming them, after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while busy := [d.name for d in actor_dirs(run_dir) if in_use(d)]:
        if time.monotonic() >= deadline:
            raise OutputError(
                f"Ray actors still write to {run_dir}/ray/ ({', '.join(busy[:3])}); "
                "wait for the run that started them to end, then run the same command again"
            )
        time.sleep(0.2)


def gather(rundir: RunDir, *, total_rows: int) -> int:
    """Move every actor directory's parts into `rundir`; returns the parts moved. Each
    emptied actor directory is removed (a quarantined part is kept in quarantine/)."""
    moved = 0
    for actor in actor_dirs(rundir.path):
        with disk_errors(rundir.path):
            fd = take_lock(actor)
        try:
            done = DoneSet(total_rows)
            recover(actor, done, rundir.warnings)  # its segments become parts
            for _, part in list_parts(actor / "parts"):
                rundir.adopt(part)
                moved += 1
            _keep_quarantined(actor, rundir.path)
        finally:
            os.close(fd)
        with disk_errors(rundir.path):
            shutil.rmtree(actor)
            fsync_dir(actor.parent)
    return moved


def _keep_quarantined(actor: Path, run_dir: Path) -> None:
    """An unreadable part found in an actor directory joins the run's quarantine/."""
    source = actor / "quarantine"
    found = sorted(source.iterdir()) if source.is_dir() else []
    if not found:
        return
    target_dir = run_dir / "quarantine"
    target_dir.mkdir(exist_ok=True)
    for part in found:
        part.replace(target_dir / f"{actor.name}-{part.name}")
    fsync_dir(target_dir)
