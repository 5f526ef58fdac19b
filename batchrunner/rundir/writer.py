"""RunDir, the writer of a run directory: lock, manifest, journal + parts, done set.

Layout: `manifest.json`, `lock` (flock; the holder's pid inside), `journal/seg-N.jsonl`,
`parts/part-N.parquet` (part N holds exactly segment N's outcomes), `quarantine/`,
`results.parquet`. The data is the checkpoint: the done set is rebuilt from parts and
journal on open (recovery.py, on replay.py's rule), never kept in a side file. A crash at
any point leaves segment N, part N or both (then their union counts). No outcome is
dropped on the way: a segment goes only once its part is checked on disk, and
results.parquet is written only when it holds exactly the outcomes the done set counts,
each id once. Journal guarantees per durability level: see journal.py. Sends nothing and
knows nothing of HTTP; the runner decides when to seal and commit.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchrunner.errors import OutputError
from batchrunner.rundir.carried import from_input
from batchrunner.rundir.claim import check_foreign, claim, take_lock
from batchrunner.rundir.doneset import DoneSet, Outcome
from batchrunner.rundir.files import disk_errors, fsync_dir, part_path
from batchrunner.rundir.journal import JournalWriter, encode_result
from batchrunner.rundir.lines import parse_lines
from batchrunner.rundir.manifest import Manifest, write_manifest
from batchrunner.rundir.parts import CorruptPartError, read_part_outcomes
from batchrunner.rundir.recovery import drop_segment, quarantine, recover, to_part
from batchrunner.rundir.results import assemble_results

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from types import TracebackType

    from batchrunner.records import Result
    from batchrunner.rundir.carried import FromInput
    from batchrunner.rundir.doneset import Counts
    from batchrunner.rundir.manifest import StoredSummary
    from batchrunner.rundir.parts import PartInfo
    from batchrunner.spec import Durability, JobSpec


@dataclass(frozen=True, slots=True)
class Sealed:
    """A closed journal segment and its outcomes, waiting for `commit` to become a part."""

    seq: int
    segment: Path
    data: bytes  # the segment's lines, so commit need not read the file back


class RunDir:
    """An open, locked run directory. Build with `RunDir.open`; use as a context manager.

    `record` and `seal` are fast and meant for the event-loop thread; `commit` and
    `finalize` block on disk and belong in a worker thread. `warnings` collects what
    recovery skipped or moved, for the CLI to print.
    """

    def __init__(
        self,
        path: Path,
        *,
        lock_fd: int,
        manifest: Manifest,
        done: DoneSet,
        parts: list[PartInfo],
        next_seq: int,
        durability: Durability,
        flush_rows: int,
        flush_s: float,
        warnings: list[str],
    ) -> None:
        self.path = path
        self._done = done
        # The runner's skip predicate, called once per input row on resume: the DoneSet's
        # bound method itself, so the check costs no extra call.
        self.is_done: Callable[[int], bool] = done.is_done
        self.warnings = warnings
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self._lock_fd: int | None = lock_fd
        self._manifest = manifest
        self._journal = JournalWriter(
            path / "journal", first_seq=next_seq, durability=durability, run_dir=path
        )
        # The open segment's lines (not its Results: a row's answer would be held twice,
        # ~5 MB over 2 000 rows, until its part is written).
        self._lines: list[bytes] = []
        self._oldest = 0.0
        self._uncommitted: dict[int, Sealed] = {}
        self._parts = parts
        # Once an outcome is recorded, the run's input and settings are fixed (see _claim).
        self._holds_outcomes = bool(parts) or (path / "results.parquet").exists()
        self._mutex = threading.Lock()  # guards the two fields below across threads
        self._committing = threading.RLock()  # one commit (or finalize) at a time

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        fingerprint: Mapping[str, object],
        total_rows: int,
        retry_errors: bool,
        durability: Durability,
        input_summary: StoredSummary | None = None,
        flush_rows: int = 2000,
        flush_s: float = 5.0,
    ) -> RunDir:
        """Create or resume `path`: lock it, check the fingerprint, recover, rebuild the done set.

        `input_summary` (what validating the input found) is stored in the manifest for
        the next resume; None keeps what is stored. Raises OutputError when another live
        process holds the lock, when the directory belongs to a different run (naming
        every differing fingerprint key; nothing is changed then) or is not a run dir;
        DiskError when it cannot be written.
        """
        check_foreign(path)
        with disk_errors(path):
            path.mkdir(parents=True, exist_ok=True)
            lock_fd = take_lock(path)
        try:
            warnings: list[str] = []
            manifest = claim(path, lock_fd, fingerprint, total_rows, input_summary, warnings)
            with disk_errors(path):
                outside = manifest.total_rows - manifest.rows  # other shards' rows
                done = DoneSet(total_rows, retry_errors=retry_errors, outside=outside)
                parts, next_seq = recover(path, done, warnings)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(
            path,
            lock_fd=lock_fd,
            manifest=manifest,
            done=done,
            parts=parts,
            next_seq=next_seq,
            durability=durability,
            flush_rows=flush_rows,
            flush_s=flush_s,
            warnings=warnings,
        )

    @property
    def total_rows(self) -> int:
        return self._done.total

    @property
    def done(self) -> DoneSet:
        """The done set, for inspection; the runner goes through `counts` and `is_done`."""
        return self._done

    @property
    def holds_outcomes(self) -> bool:
        """Whether any outcome is recorded here, so a resume must keep input and settings."""
        return self._holds_outcomes

    def counts(self) -> Counts:
        """Rows of the current input by outcome, as a frozen value."""
        return self._done.counts()

    def record(self, result: Result) -> None:
        """Append the outcome to the journal (one write); from then on the row is done."""
        line = encode_result(result)
        self._journal.append(line)
        if not self._lines:
            self._oldest = time.monotonic()
        self._lines.append(line)
        self._done.mark(result.index, succeeded=result.status == "succeeded")
        self._holds_outcomes = True

    def should_seal(self, now: float) -> bool:
        """True when flush_rows outcomes wait, or the oldest waited flush_s (time.monotonic)."""
        if not self._lines:
            return False
        return len(self._lines) >= self.flush_rows or now - self._oldest >= self.flush_s

    def sync_if_due(self, now: float) -> None:
        """With durability "os": flush the journal if a second passed; call it now and then."""
        self._journal.sync_if_due(now)

    def seal(self) -> Sealed | None:
        """Close the current segment and start the next one; None when nothing was recorded."""
        if not self._lines:
            return None
        seq = self._journal.seq
        segment = self._journal.rotate()
        assert segment is not None  # outcomes were appended, so the segment exists
        sealed = Sealed(seq, segment, b"".join(self._lines))
        self._lines = []
        with self._mutex:
            self._uncommitted[seq] = sealed
        return sealed

    def commit(self, sealed: Sealed) -> None:
        """Turn a sealed segment into its part, then drop the segment (blocking).

        Commits run one at a time; committing the same Sealed twice is harmless. The
        segment is deleted only once the part read back holds every one of its lines'
        rows; on DiskError or IntegrityError it stays, so nothing is lost: resume converts it.
        """
        with self._committing:
            with self._mutex:
                if sealed.seq not in self._uncommitted:
                    return
            name = sealed.segment.name
            table, misfits = parse_lines(sealed.data, name=name)
            written = to_part(
                self.path / "parts", sealed.seq, [table], run_dir=self.path, source=name
            )
            drop_segment(sealed.segment, run_dir=self.path)
            with self._mutex:
                self.warnings.extend(misfits)
                if written is not None:
                    self._parts.append(written.info)
                del self._uncommitted[sealed.seq]

    def adopt(self, part: Path) -> None:
        """Make `part` (written elsewhere on this file system: a Ray actor's directory) this
        run's next part with one rename, so it is never in both places, and count its rows."""
        with self._committing:
            seq = self._journal.skip()
            target = part_path(self.path / "parts", seq)
            with disk_errors(self.path):
                part.replace(target)
                fsync_dir(target.parent)
                fsync_dir(part.parent)
            found = read_part_outcomes(seq, target)
            self._done.mark_many(found.indices, found.succeeded)
            self._done.recount()
            with self._mutex:
                self._parts.append(found.info)
            self._holds_outcomes = True

    def set_total(self, total_rows: int) -> None:
        """Record a new input size (say, a different --limit) in the manifest."""
        self._manifest = self._manifest.updated(total_rows=total_rows, summary=None)
        write_manifest(self.path, self._manifest)
        self._done.set_total(total_rows)

    def finalize(
        self,
        extra_columns: dict[str, str],
        spec: JobSpec | None = None,
        parsed_columns: dict[str, str] | None = None,
    ) -> Path:
        """Commit what is left and write results.parquet (input order, last outcome wins).

        `extra_columns` maps carried-through fields to Arrow type strings ("string",
        "int64", "double", "bool", "json", or any Arrow type string); a type that cannot
        be parsed or does not fit the values becomes a JSON text column, with a warning.
        A Parquet input (`spec.input`) gives its carried columns exactly, with their Arrow
        types (carried.py); one it cannot serve falls back, with a warning. `parsed_columns`
        (a run with --json-schema) adds `parsed` and the schema's typed fields. Call it once
        nothing is being recorded any more. Raises IntegrityError, writing no
        results.parquet and deleting nothing, when the parts do not hold exactly the
        outcomes the done set counts, or when two rows share an id.
        """
        self.seal()  # the open buffer joins the uncommitted segments
        with self._committing:  # waits for a commit still running in another thread
            with self._mutex:
                pending = sorted(self._uncommitted.values(), key=lambda s: s.seq)
            for sealed in pending:
                self.commit(sealed)
            with self._mutex:
                parts = sorted(self._parts, key=lambda p: p.seq)
        out = self.path / "results.parquet"
        try:
            try:
                path, fmt = (spec.input, spec.input_format) if spec else (None, None)
                carried = from_input(path, fmt, list(extra_columns))
                self.warnings.extend(
                    self._assemble(parts, out, extra_columns, carried, parsed_columns)
                )
            except ValueError as exc:
                self.warnings.append(
                    f"carried-through columns not read from the input ({exc}); rebuilt from "
                    "the journal's JSON instead, where binary, duration, map and dictionary "
                    "values become text"
                )
                self.warnings.extend(
                    self._assemble(parts, out, extra_columns, None, parsed_columns)
                )
        except CorruptPartError as exc:
            quarantine(self.path, exc.path, exc.reason, self.warnings)
            raise OutputError(
                f"{exc}; it was moved to quarantine/ and its rows will be sent again: "
                "run the same command again"
            ) from exc
        return out

    def _assemble(
        self,
        parts: list[PartInfo],
        out: Path,
        extra_columns: dict[str, str],
        carried: FromInput | None,
        parsed_columns: dict[str, str] | None,
    ) -> list[str]:
        return assemble_results(
            parts,
            out,
            total_rows=self.total_rows,
            extra_columns=extra_columns,
            run_dir=self.path,
            succeeded=self._done.count(Outcome.SUCCEEDED),
            errored=self._done.count(Outcome.ERRORED),
            carried=carried,
            parsed_columns=parsed_columns,
        )

    def close(self) -> None:
        """Close the journal and release the lock (idempotent)."""
        self._journal.close()
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)  # closing the last fd releases the flock

    def __enter__(self) -> RunDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
