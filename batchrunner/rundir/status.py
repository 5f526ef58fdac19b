"""`read_status`: what a run dir holds, from its files alone, while a run writes or not.

Read-only: it reads the manifest, parts and journal segments (replay.py's one replay, with
no converter) and probes the lock with a shared non-blocking flock released at once, so
it is safe while a run is writing and correct at any moment. It never writes, repairs or
quarantines anything (the writer's recovery does that on open), and imports no module
that writes the run dir (writer, journal, recovery, results). A shard dir counts its own
rows only; a merged dir (`batchrunner merge`) has no parts, and is counted from its
results.parquet.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchrunner.errors import OutputError
from batchrunner.rundir.doneset import DoneSet
from batchrunner.rundir.manifest import read_manifest
from batchrunner.rundir.replay import listing, replay

if TYPE_CHECKING:
    from pathlib import Path

    from batchrunner.rundir.manifest import Manifest

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
    shard: str | None = None  # "I/N" for a --shard run dir, "merged" for a merge's

    def to_json(self) -> str:
        obj = {**asdict(self), "warnings": list(self.warnings)}
        if self.shard is None:
            del obj["shard"]  # the key is there for shard and merged dirs only
        return json.dumps(obj)


def lock_held(path: Path) -> bool:
    """Whether a process holds the lock of the run directory at `path` (probed with a
    shared lock, dropped at once)."""
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
    if manifest.merged is not None:
        return _merged_status(path, manifest)
    total = manifest.total_rows
    running = lock_held(path)
    for _ in range(_RELIST_TRIES):
        done, warnings = DoneSet(total, outside=total - manifest.rows), list[str]()
        # A listed file vanished: the writer committed or quarantined meanwhile; list again.
        with contextlib.suppress(FileNotFoundError):
            replay(listing(path), done, warnings, live=running)
            break
    else:
        raise OutputError(f"{path} kept changing while being read; try again")
    counts = done.counts()
    fingerprint = manifest.fingerprint
    shard = fingerprint.get("shard") if isinstance(fingerprint, dict) else None
    return RunStatus(
        total=counts.total,
        succeeded=counts.succeeded,
        errored=counts.errored,
        pending=counts.pending,
        complete=counts.pending == 0,
        running=running,
        warnings=tuple(warnings),
        shard=shard if isinstance(shard, str) else None,
    )


def _merged_status(path: Path, manifest: Manifest) -> RunStatus:
    """Counts of a merged dir, from the status column of its results.parquet."""
    tally = {"succeeded": 0, "errored": 0}
    try:
        with pq.ParquetFile(path / "results.parquet") as pf:
            for batch in pf.iter_batches(columns=["status"]):
                for item in pc.value_counts(batch.column(0)).to_pylist():
                    tally[item["values"]] = tally.get(item["values"], 0) + item["counts"]
    except FileNotFoundError:
        raise OutputError(f"{path} is a merged dir without results.parquet") from None
    done = tally["succeeded"] + tally["errored"]
    return RunStatus(
        total=manifest.total_rows,
        succeeded=tally["succeeded"],
        errored=tally["errored"],
        pending=max(0, manifest.total_rows - done),
        complete=done >= manifest.total_rows,
        running=False,
        shard="merged",
    )
