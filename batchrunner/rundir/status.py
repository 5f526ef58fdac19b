"""What a run dir says: the DoneSet, the manifest (and fingerprint diff), `read_status`.

`read_status` only reads (manifest, parts, journal segments; the lock is probed with a
shared non-blocking flock released at once), so it is safe while a run is writing, and
correct at any moment: parts and segments are keyed by sequence number, part wins.
It never writes, repairs or quarantines anything; that is checkpoint's job on open.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from batchrunner.errors import OutputError
from batchrunner.journal import list_numbered, list_segments
from batchrunner.lines import segment_outcomes
from batchrunner.sink import is_unreadable, read_part_outcomes

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

PENDING, SUCCEEDED, ERRORED = 0, 1, 2
_RELIST_TRIES = 20


class DoneSet:
    """Outcome per input row position: 0 pending, 1 succeeded, 2 errored (last wins).

    A bytearray: O(1) lookups, one byte per row. It grows past `total` when parts hold
    rows of a larger earlier run; counts only look at positions below `total`.
    """

    def __init__(self, total: int, *, retry_errors: bool = False) -> None:
        self.total = total
        self.retry_errors = retry_errors
        self._codes = bytearray(total)
        self._counts = [total, 0, 0]

    def code(self, index: int) -> int:
        return self._codes[index] if index < len(self._codes) else PENDING

    def is_done(self, index: int) -> bool:
        """Skip this row? Errored rows count as done unless retry_errors."""
        code = self.code(index)
        return code == SUCCEEDED or (code == ERRORED and not self.retry_errors)

    def mark(self, index: int, *, succeeded: bool) -> None:
        if index >= len(self._codes):
            self._codes.extend(bytes(index + 1 - len(self._codes)))
        new = SUCCEEDED if succeeded else ERRORED
        if index < self.total:
            self._counts[self._codes[index]] -= 1
            self._counts[new] += 1
        self._codes[index] = new

    def mark_many(self, indices: Sequence[int], succeeded: Sequence[bool]) -> None:
        """Bulk `mark` for replay; call `recount` afterwards."""
        if not indices:
            return
        top = max(indices)
        if top >= len(self._codes):
            self._codes.extend(bytes(top + 1 - len(self._codes)))
        codes = self._codes
        for i, ok in zip(indices, succeeded, strict=True):
            codes[i] = SUCCEEDED if ok else ERRORED

    def recount(self) -> None:
        n = self.total
        if len(self._codes) < n:
            self._codes.extend(bytes(n - len(self._codes)))
        ok, err = self._codes.count(SUCCEEDED, 0, n), self._codes.count(ERRORED, 0, n)
        self._counts = [n - ok - err, ok, err]

    def set_total(self, total: int) -> None:
        self.total = total
        self.recount()

    def count(self, code: int, upto: int | None = None) -> int:
        """Rows below `upto` (default: the total) whose code is `code` (O(n), for summaries)."""
        end = self.total if upto is None else upto
        beyond = max(0, end - len(self._codes)) if code == PENDING else 0
        return self._codes.count(code, 0, end) + beyond

    def count_done(self, upto: int | None = None) -> int:
        """Rows below `upto` that `is_done` would skip."""
        errored = 0 if self.retry_errors else self.count(ERRORED, upto)
        return self.count(SUCCEEDED, upto) + errored

    @property
    def succeeded(self) -> int:
        return self._counts[SUCCEEDED]

    @property
    def errored(self) -> int:
        return self._counts[ERRORED]

    @property
    def pending(self) -> int:
        return self._counts[PENDING]

    @property
    def remaining(self) -> int:
        """Rows this run still has to send: pending, plus errored with retry_errors."""
        return self.pending + (self.errored if self.retry_errors else 0)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of run dir `path`, or None when there is none yet."""
    try:
        raw = (path / "manifest.json").read_text()
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise OutputError(f"{path / 'manifest.json'} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict):
        raise OutputError(f"{path / 'manifest.json'} is not a batchrunner manifest")
    return manifest


_ABSENT = object()


def _flatten(value: object, prefix: str, out: dict[str, object]) -> dict[str, object]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value
    return out


def _show(value: object) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def fingerprint_diff(stored: object, given: object) -> list[str]:
    """`key.path: old -> new` for every leaf that differs between two fingerprints."""
    # Compare as JSON sees them: the stored side went through JSON, tuples became lists.
    old = _flatten(json.loads(json.dumps(stored, default=str)), "", {})
    new = _flatten(json.loads(json.dumps(given, default=str)), "", {})
    diffs = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if json.dumps(a, sort_keys=True, default=repr) != json.dumps(
            b, sort_keys=True, default=repr
        ):
            diffs.append(f"{key or '(root)'}: {_show(a)} -> {_show(b)}")
    return diffs


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


class _Changed(Exception):
    """A listed file vanished: the writer committed or quarantined meanwhile; list again."""


def _replay(path: Path, done: DoneSet, warnings: list[str], *, running: bool) -> None:
    # Segments before parts: a segment that vanishes after this listing has become a part
    # that the later listing sees (commit renames the part before unlinking the segment).
    segments = dict(list_segments(path / "journal"))
    parts = dict(list_numbered(path / "parts", "part", ".parquet"))
    for seq in sorted(parts.keys() | segments.keys()):
        try:
            if seq in parts:
                try:
                    outcomes = read_part_outcomes(seq, parts[seq])
                except Exception as exc:
                    if not is_unreadable(exc):
                        raise
                    warnings.append(f"{parts[seq].name} is unreadable; its rows count as pending")
                    continue
                done.mark_many(outcomes.indices, outcomes.succeeded)
            else:
                # While a run writes, bytes past the last newline are a line being written.
                torn = None if running else warnings
                indices, succeeded, skipped = segment_outcomes(segments[seq], torn=torn)
                warnings.extend(skipped)
                done.mark_many(indices, succeeded)
        except FileNotFoundError as exc:
            raise _Changed from exc


def read_status(path: Path) -> RunStatus:
    """Count what run dir `path` holds, from its files alone (safe during a run)."""
    manifest = read_manifest(path)
    if manifest is None:
        raise OutputError(f"{path} is not a batchrunner run directory (no manifest.json)")
    total = int(manifest.get("total_rows", 0))
    running = _lock_held(path)
    for _ in range(_RELIST_TRIES):
        done, warnings = DoneSet(total), list[str]()
        with contextlib.suppress(_Changed):
            _replay(path, done, warnings, running=running)
            break
    else:
        raise OutputError(f"{path} kept changing while being read; try again")
    done.recount()
    return RunStatus(
        total=total,
        succeeded=done.succeeded,
        errored=done.errored,
        pending=done.pending,
        complete=done.pending == 0,
        running=running,
        warnings=tuple(warnings),
    )
