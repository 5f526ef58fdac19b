"""The run directory: lock, manifest (run fingerprint), journal + parts, done set, recovery.

Layout: `manifest.json`, `lock` (flock; the holder's pid inside), `journal/seg-N.jsonl`,
`parts/part-N.parquet` (part N holds exactly segment N's outcomes), `quarantine/`,
`results.parquet`. The data is the checkpoint: the done set is rebuilt from parts and
journal on open, never kept in a side file. A crash at any point leaves segment N, part N
or both (then the part wins). Journal guarantees per durability level: see journal.py.
Sends nothing and knows nothing of HTTP; the runner decides when to seal and commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchrunner.assemble import assemble_results
from batchrunner.errors import OutputError
from batchrunner.journal import (
    JournalWriter,
    disk_errors,
    encode_result,
    fsync_dir,
    list_numbered,
    list_segments,
    read_chunks,
)
from batchrunner.sink import (
    CorruptPartError,
    PartInfo,
    is_unreadable,
    parse_lines,
    read_part_outcomes,
    write_part,
)
from batchrunner.status import DoneSet, fingerprint_diff, read_manifest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from types import TracebackType

    import pyarrow as pa

    from batchrunner.records import Result
    from batchrunner.spec import Durability

_OWN_NAMES = {"lock", "manifest.json.tmp", "journal", "parts", "quarantine"}
_LOCK_TRIES = 10  # `status` probes the lock for microseconds; don't mistake that for a run


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Replace manifest.json atomically (tmp, fsync, rename, dir fsync)."""
    final = path / "manifest.json"
    tmp = path / "manifest.json.tmp"
    with disk_errors(path):
        with tmp.open("w") as fh:
            json.dump({"format": 1, **manifest}, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(final)
        fsync_dir(path)


@dataclass(frozen=True, slots=True)
class Sealed:
    """A closed journal segment and its outcomes, waiting for `commit` to become a part."""

    seq: int
    segment: Path
    results: tuple[Result, ...]
    data: bytes  # the segment's lines, so commit need not read the file back


def _check_foreign(path: Path) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputError(f"{path} exists and is not a directory")
    if (path / "manifest.json").exists():
        return
    names = (p.name for p in path.iterdir())
    foreign = sorted(n for n in names if n not in _OWN_NAMES and not n.startswith("."))
    if foreign:
        raise OutputError(
            f"{path} is not a batchrunner run directory (no manifest.json, but it holds "
            f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
            "choose a new or empty directory"
        )


def _take_lock(path: Path) -> int:
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
        manifest: dict[str, Any],
        done: DoneSet,
        parts: list[PartInfo],
        next_seq: int,
        durability: Durability,
        flush_rows: int,
        flush_s: float,
        warnings: list[str],
    ) -> None:
        self.path = path
        self.done = done
        self.warnings = warnings
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self._lock_fd: int | None = lock_fd
        self._manifest = manifest
        self._journal = JournalWriter(
            path / "journal", first_seq=next_seq, durability=durability, run_dir=path
        )
        self._buffer: list[Result] = []
        self._lines: list[bytes] = []
        self._oldest = 0.0
        self._uncommitted: dict[int, Sealed] = {}
        self._parts = parts
        self._mutex = threading.Lock()  # guards the two fields below across threads
        self._committing = threading.RLock()  # one commit (or finalize) at a time

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        fingerprint: dict[str, object],
        total_rows: int,
        retry_errors: bool,
        durability: Durability,
        flush_rows: int = 2000,
        flush_s: float = 5.0,
    ) -> RunDir:
        """Create or resume `path`: lock it, check the fingerprint, recover, rebuild the done set.

        Raises OutputError when another live process holds the lock, when the directory
        belongs to a different run (naming every differing fingerprint key; nothing is
        changed then) or is not a run dir; DiskError when it cannot be written.
        """
        _check_foreign(path)
        with disk_errors(path):
            path.mkdir(parents=True, exist_ok=True)
            lock_fd = _take_lock(path)
        try:
            manifest = read_manifest(path)
            if manifest is None:
                manifest = {"fingerprint": fingerprint, "total_rows": total_rows}
                write_manifest(path, manifest)
            else:
                diff = fingerprint_diff(manifest.get("fingerprint", {}), fingerprint)
                if diff:
                    raise OutputError(
                        f"run dir {path} holds a different run ({'; '.join(diff)}); "
                        "use a new output directory, or the original input and settings"
                    )
            with disk_errors(path):
                os.ftruncate(lock_fd, 0)
                os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
                if manifest.get("total_rows") != total_rows:
                    manifest = {**manifest, "total_rows": total_rows}
                    write_manifest(path, manifest)
                done = DoneSet(total_rows, retry_errors=retry_errors)
                warnings: list[str] = []
                parts, next_seq = _recover(path, done, warnings)
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
        return self.done.total

    def record(self, result: Result) -> None:
        """Append the outcome to the journal (one write); from then on the row is done."""
        line = encode_result(result)
        self._journal.append(line)
        if not self._buffer:
            self._oldest = time.monotonic()
        self._buffer.append(result)
        self._lines.append(line)
        self.done.mark(result.index, succeeded=result.status == "succeeded")

    def should_seal(self, now: float) -> bool:
        """True when flush_rows outcomes wait, or the oldest waited flush_s (time.monotonic)."""
        if not self._buffer:
            return False
        return len(self._buffer) >= self.flush_rows or now - self._oldest >= self.flush_s

    def sync_if_due(self, now: float) -> None:
        """With durability "os": flush the journal if a second passed; call it now and then."""
        self._journal.sync_if_due(now)

    def seal(self) -> Sealed | None:
        """Close the current segment and start the next one; None when nothing was recorded."""
        if not self._buffer:
            return None
        seq = self._journal.seq
        segment = self._journal.rotate()
        assert segment is not None  # outcomes were appended, so the segment exists
        sealed = Sealed(seq, segment, tuple(self._buffer), b"".join(self._lines))
        self._buffer, self._lines = [], []
        with self._mutex:
            self._uncommitted[seq] = sealed
        return sealed

    def commit(self, sealed: Sealed) -> None:
        """Turn a sealed segment into its part, then drop the segment (blocking).

        Commits run one at a time; committing the same Sealed twice is harmless. On
        DiskError the segment stays, so nothing is lost: resume converts it.
        """
        with self._committing:
            with self._mutex:
                if sealed.seq not in self._uncommitted:
                    return
            table, _ = parse_lines(sealed.data)
            written = write_part(self.path / "parts", sealed.seq, [table], run_dir=self.path)
            with disk_errors(self.path):
                sealed.segment.unlink(missing_ok=True)
                fsync_dir(sealed.segment.parent)
            with self._mutex:
                if written is not None:
                    self._parts.append(written.info)
                del self._uncommitted[sealed.seq]

    def remember(self, key: str, value: object) -> None:
        """Keep a fact about the run (e.g. the validated input's summary) in the manifest."""
        self._manifest = {**self._manifest, key: value}
        write_manifest(self.path, self._manifest)

    def set_total(self, total_rows: int) -> None:
        """Record a new input size (say, a different --limit) in the manifest."""
        self._manifest = {**self._manifest, "total_rows": total_rows}
        write_manifest(self.path, self._manifest)
        self.done.set_total(total_rows)

    def finalize(self, extra_columns: dict[str, str]) -> Path:
        """Commit what is left and write results.parquet (input order, last outcome wins).

        `extra_columns` maps carried-through fields to Arrow type strings ("string",
        "int64", "double", "bool", "json", or any Arrow type string); a type that cannot
        be parsed or does not fit the values becomes a JSON text column, with a warning.
        Call it once nothing is being recorded any more.
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
            self.warnings.extend(
                assemble_results(
                    parts,
                    out,
                    total_rows=self.total_rows,
                    extra_columns=extra_columns,
                    run_dir=self.path,
                )
            )
        except CorruptPartError as exc:
            _quarantine(self.path, exc.path, exc.reason, self.warnings)
            raise OutputError(
                f"{exc}; it was moved to quarantine/ and its rows will be sent again: "
                "run the same command again"
            ) from exc
        return out

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


def _quarantine(run_dir: Path, part: Path, reason: str, warnings: list[str]) -> None:
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
    for offset, data in read_chunks(segment):
        table, skipped = parse_lines(data, offset=offset, name=segment.name)
        warnings.extend(skipped)
        yield table


def _recover(path: Path, done: DoneSet, warnings: list[str]) -> tuple[list[PartInfo], int]:
    """Replay parts and segments in sequence order into `done`; turn segments into parts.

    Returns the parts and the next free sequence number.
    """
    parts_dir, journal_dir = path / "parts", path / "journal"
    parts_dir.mkdir(exist_ok=True)
    journal_dir.mkdir(exist_ok=True)
    _remove_tmp(path, parts_dir, journal_dir)
    part_files = dict(list_numbered(parts_dir, "part", ".parquet"))
    segments = dict(list_segments(journal_dir))
    quarantined = [n for n, _ in list_numbered(path / "quarantine", "part", ".parquet")]
    infos: list[PartInfo] = []
    for seq in sorted(part_files.keys() | segments.keys()):
        part = part_files.get(seq)
        if part is not None:
            try:
                outcomes = read_part_outcomes(seq, part)
            except Exception as exc:
                if not is_unreadable(exc):
                    raise
                _quarantine(path, part, str(exc).splitlines()[0], warnings)
            else:
                done.mark_many(outcomes.indices, outcomes.succeeded)
                infos.append(outcomes.info)
                if seq in segments:  # crashed between rename and unlink: the part wins
                    segments[seq].unlink()
                continue
        segment = segments.get(seq)
        if segment is None:
            continue
        written = write_part(parts_dir, seq, _segment_tables(segment, warnings), run_dir=path)
        if written is not None:
            done.mark_many(written.indices, written.succeeded)
            infos.append(written.info)
        segment.unlink()
    if segments:
        fsync_dir(journal_dir)
    done.recount()
    next_seq = max([*part_files, *segments, *quarantined], default=0) + 1
    return infos, next_seq
