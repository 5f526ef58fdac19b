"""The run directory: everything batchrunner keeps on disk for one run, and nothing else.

Public surface: `RunDir` (the writer: lock, manifest, journal, parts, results.parquet),
`read_status`/`RunStatus` (read-only), `Manifest`/`StoredSummary`/`stored_summary`, the
`DoneSet` with its `Outcome`s and `Counts`, and `OUTPUT_SCHEMA`. Modules, one job each:
files (atomic write, fsync, disk errors, numbered files), manifest, doneset, journal
(writing segments), lines (reading them), parts, results (assembly), replay (the one rule
for counting parts and segments), recovery (repair on open), writer, status, given (rows
the Python API was given as objects, kept as the run's input file).
"""

from __future__ import annotations

from batchrunner.rundir.doneset import Counts, DoneSet, Outcome
from batchrunner.rundir.manifest import Manifest, StoredSummary, stored_summary
from batchrunner.rundir.parts import OUTPUT_SCHEMA
from batchrunner.rundir.status import RunStatus, read_status
from batchrunner.rundir.writer import RunDir, Sealed

__all__ = [
    "OUTPUT_SCHEMA",
    "Counts",
    "DoneSet",
    "Manifest",
    "Outcome",
    "RunDir",
    "RunStatus",
    "Sealed",
    "StoredSummary",
    "read_status",
    "stored_summary",
]
