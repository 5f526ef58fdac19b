"""The journal: append-only JSON-lines segments, one line per recorded outcome.

Guarantees. `JournalWriter.append` hands the whole line to the kernel with one `os.write`
before it returns, so a killed process (`kill -9`, OOM) loses nothing that was appended.
Durability "process" stops there (a power cut may lose what the page cache held);
"os" also `fdatasync`s the segment at most 1 s after a line is appended (on the next append
or `sync_if_due`), so a power cut loses at most about a second. Readers drop a torn
last line (`lines.read_chunks`). This module writes segments and encodes lines; reading
them is lines.py's job. No pyarrow here.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import json
import os
import re
import time
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from batchrunner import jsoncodec
from batchrunner.errors import DiskError, IntegrityError
from batchrunner.records import Result
from batchrunner.rundir.files import disk_errors, fsync_dir, segment_path

if TYPE_CHECKING:
    from pathlib import Path

    from batchrunner.spec import Durability

SYNC_INTERVAL_S = 1.0
_FIELDS = tuple(f.name for f in fields(Result))
_SPECIAL = {"index", "completed_at_us", "extra"}
# JSON text: a \uXXXX escape keeps its meaning exactly
_JSON_TEXT = {"response", "_extra", "parsed", "tool_calls.arguments"}
_LONE = re.compile("[\ud800-\udfff]")


def _json_default(value: object) -> object:
    # Carried-through Parquet values are not all JSON: keep them readable and reversible
    # enough for the final column conversion (Arrow casts ISO strings back to timestamps).
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


# `_extra` (any value a Parquet input carries: big integers, NaN) is the standard
# library's; the line around it is `jsoncodec`'s. One encoder: json.dumps with options
# builds a new one per call.
_ENCODER = json.JSONEncoder(default=_json_default, ensure_ascii=False, separators=(",", ":"))
_dumps = _ENCODER.encode


def encode_result(result: Result) -> bytes:
    """One journal line: UTF-8 JSON keyed like a part's columns, None fields left out.

    `completed_at` is microseconds since the epoch and `_extra` the carried-through
    fields as JSON text, so a segment parses straight into a part table. Characters are
    never replaced silently: see `_fit_surrogates` for the one kind UTF-8 cannot hold.
    """
    obj: dict[str, Any] = {"_index": result.index}
    for name in _FIELDS:
        value = getattr(result, name)
        if value is not None and name not in _SPECIAL:
            obj[name] = value
    obj["completed_at"] = result.completed_at_us
    if result.extra:
        obj["_extra"] = _dumps(result.extra)
    try:
        return jsoncodec.dumps(obj, default=_json_default) + b"\n"
    except UnicodeEncodeError:
        return jsoncodec.dumps(_fit_surrogates(obj), default=_json_default) + b"\n"


def _fit_surrogates(obj: dict[str, Any]) -> dict[str, Any]:
    """The line's strings with every unpaired UTF-16 surrogate (no UTF-8 form) dealt with.

    A pair split in two (a stream that cut an emoji between deltas) is joined: the same
    character. A lone one in JSON text (`response`, `_extra`, `parsed`, a tool call's
    `arguments`) becomes its `\\uXXXX` escape, which decodes to the same string; in other
    text it becomes U+FFFD, said in the row's error_message; in the id it is an
    IntegrityError, since ids are kept exactly or not at all.
    """
    fixed = dict(obj)
    notes: list[str] = []
    for key, value in obj.items():
        if key == "tool_calls" and isinstance(value, list | tuple):
            fixed[key] = [
                {name: _fit_text(f"{key}.{name}", text, notes) for name, text in call.items()}
                for call in value
            ]
        else:
            before = len(notes)
            fixed[key] = _fit_text(key, value, notes)
            if key == "id" and len(notes) > before:
                raise IntegrityError(
                    f"row {obj['_index']}: its id {value!r} holds an unpaired UTF-16 surrogate, "
                    "which has no UTF-8 form; it cannot be stored exactly"
                )
    if notes:
        fixed["error_message"] = "; ".join([*filter(None, [fixed.get("error_message")]), *notes])
    return fixed


def _fit_text(key: str, value: object, notes: list[str]) -> Any:
    """`value` (at `key`) with its unpaired surrogates joined, escaped or replaced."""
    if not isinstance(value, str) or _LONE.search(value) is None:
        return value
    joined = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    lone = len(_LONE.findall(joined))
    if not lone:
        return joined
    if key in _JSON_TEXT:
        return _LONE.sub(lambda m: f"\\u{ord(m.group()):04x}", joined)
    notes.append(f"{key}: {lone} unpaired UTF-16 surrogate(s) replaced by U+FFFD")
    return _LONE.sub("\ufffd", joined)


class JournalWriter:
    """Appends lines to `seg-N.jsonl`; `rotate` closes segment N and moves on to N+1.

    The segment file is created on the first append, so an idle interval leaves no file.
    Not thread-safe: one writer task owns it.
    """

    def __init__(
        self, journal_dir: Path, *, first_seq: int, durability: Durability, run_dir: Path
    ) -> None:
        self._dir = journal_dir
        self._seq = first_seq
        self._durability = durability
        self._run_dir = run_dir
        self._fd: int | None = None
        self._size = 0
        self._dirty = False
        self._dir_synced = True
        self._torn = False  # a half line that could not be truncated ends this segment
        self._last_sync = time.monotonic()

    @property
    def seq(self) -> int:
        """The number of the segment the next append goes to."""
        return self._seq

    @property
    def path(self) -> Path:
        return segment_path(self._dir, self._seq)

    def skip(self) -> int:
        """Give the current number to a part made elsewhere (`RunDir.adopt`); appends go
        to the next one. Only between segments: nothing may be appended to this one."""
        assert self._fd is None, "a segment is open"
        seq = self._seq
        self._seq += 1
        return seq

    def append(self, line: bytes) -> None:
        """Write one complete line with one write(); on failure, undo any partial write."""
        if self._torn:
            raise DiskError(
                f"cannot write to {self._run_dir}: a failed journal write could not be undone; "
                "run the same command again to resume"
            )
        with disk_errors(self._run_dir):
            if self._fd is None:
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                self._fd = os.open(self.path, flags, 0o644)
                self._size = os.fstat(self._fd).st_size
                self._dir_synced = False
            fd = self._fd
            try:
                written = os.write(fd, line)
                while written < len(line):  # regular files rarely write short; finish the line
                    written += os.write(fd, line[written:])
            except OSError:
                # Leave no half line behind: the next append would glue onto it. If even the
                # undo fails, append nothing more here, so the half line stays the segment's
                # last, which readers drop as torn (a complete garbled line stops them).
                try:
                    os.ftruncate(fd, self._size)
                except OSError:
                    self._torn = True
                raise
            self._size += len(line)
            self._dirty = True
            if self._durability == "os":
                self.sync_if_due(time.monotonic())

    def sync_if_due(self, now: float) -> None:
        """With durability "os": fdatasync when the last sync is SYNC_INTERVAL_S old."""
        if self._durability == "os" and self._dirty and now - self._last_sync >= SYNC_INTERVAL_S:
            self.sync()
            self._last_sync = now

    def sync(self) -> None:
        """Flush the open segment (and, once, its directory entry) to stable storage."""
        if self._fd is None or not self._dirty:
            return
        with disk_errors(self._run_dir):
            os.fdatasync(self._fd)
            if not self._dir_synced:
                fsync_dir(self._dir)
                self._dir_synced = True
        self._dirty = False

    def rotate(self) -> Path | None:
        """Close the current segment; later appends go to the next one. Returns its path."""
        if self._fd is None:
            return None
        closed = self.path
        if self._durability == "os":
            self.sync()
        self._close_fd()
        self._seq += 1
        self._torn = False
        return closed

    def close(self) -> None:
        if self._fd is not None and self._durability == "os":
            with contextlib.suppress(DiskError):
                self.sync()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._dirty = False
            os.close(fd)
