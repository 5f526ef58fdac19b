"""calls.log: one JSON line per HTTP attempt, for support tickets and post-mortems.

The API docs ask users to log the response id of every call. Lines gather in memory and
go out whole, in one write() (O_APPEND): every `FLUSH_S` (`flushing`, a task of the run),
whenever `FLUSH_BYTES` have gathered, and on close. A write per attempt cost ~8 µs of CPU
once writes were spread out (each updates the file's times), ~2% of a run. So a crash
(kill -9) loses at most the lines of the last `FLUSH_S` and tears at most the last line;
the rows' outcomes are in the journal all the same. It never sees the API key: attempts
carry ids, statuses, timings and, for a failed attempt, its error message, redacted when
the error was made. `last_error` reads the newest failure back for `report` (a tripped
breaker leaves its rows pending, so calls.log is the one file that holds why).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

import anyio

from batchrunner import jsoncodec
from batchrunner.errors import DiskError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import TracebackType

    from batchrunner.records import Attempt, Result


FLUSH_S = 0.2  # the most of calls.log a kill -9 can lose
FLUSH_BYTES = 64 * 1024


class CallLog:
    """Appends attempt lines to a file; echoes each to `echo` too (the CLI's `-v`), and
    hands each attempt to `tap` (the run's progress counters). Run `flushing` beside the
    attempts; leaving the `with` writes what is left."""

    def __init__(
        self,
        path: Path,
        *,
        echo: Callable[[str], None] | None = None,
        tap: Callable[[Attempt], None] | None = None,
    ) -> None:
        self.path = path
        self.echo = echo
        self.tap = tap
        self._fd = -1
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def __enter__(self) -> CallLog:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DiskError(f"cannot open {self.path}: {exc.strerror}") from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd >= 0:
            self.flush()
            os.close(self._fd)
            self._fd = -1

    def write(self, attempt: Attempt) -> None:
        if self.tap is not None:
            self.tap(attempt)
        # Built by hand: dataclasses.asdict deep-copies and cost more than the write.
        record = {
            "ts": round(time.time(), 3),
            "row_id": attempt.row_id,
            "attempt": attempt.attempt,
            "http_status": attempt.http_status,
            "request_id": attempt.request_id,
            "response_id": attempt.response_id,
            "latency_ms": round(attempt.latency_ms, 1),
            "error_type": attempt.error_type,
            "retry_after": attempt.retry_after,
        }
        if attempt.error_message is not None:
            record["error_message"] = attempt.error_message
        if attempt.slowed is not None:  # the pacer's decision, on the answer that caused it
            record["slowed"] = attempt.slowed
        self._emit(record)

    def cache_hit(self, result: Result) -> None:
        """A row answered from --cache: no attempt; the ids of the answer it takes."""
        record = {
            "ts": round(time.time(), 3),
            "row_id": result.id,
            "attempt": 0,
            "http_status": result.http_status,
            "request_id": result.request_id,
            "response_id": result.response_id,
            "latency_ms": 0.0,
            "error_type": None,
            "retry_after": None,
            "cache": "hit",
        }
        self._emit(record)

    def _emit(self, record: dict[str, object]) -> None:
        try:
            line = jsoncodec.dumps(record)
        except UnicodeEncodeError:  # a lone surrogate (an id from escaped JSON) is escaped
            line = json.dumps(record, separators=(",", ":")).encode()
        self._pending.append(line)
        self._pending_bytes += len(line) + 1
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()
        if self.echo is not None:
            self.echo(line.decode())

    def flush(self) -> None:
        """Write the gathered lines, whole, in one write()."""
        if not self._pending:
            return
        data = b"\n".join(self._pending) + b"\n"
        self._pending.clear()
        self._pending_bytes = 0
        # The log is for humans; a full disk is reported by the journal, which matters.
        with contextlib.suppress(OSError):
            os.write(self._fd, data)

    async def flushing(self) -> None:
        """Flush every `FLUSH_S` until cancelled: the crash bound while attempts are sparse."""
        while True:
            await anyio.sleep(FLUSH_S)
            self.flush()


# Far enough back to pass the cancelled attempts of a stop (one per worker) and the
# successes after a failure; reading more would make `report` slow on a long log.
_TAIL_BYTES = 1 << 20


def last_error(path: Path) -> dict[str, Any] | None:
    """The newest failed attempt in the last MiB of calls.log (cancelled ones skipped), as
    logged; None when there is none, or no calls.log."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _TAIL_BYTES))
            tail = fh.read()
    except FileNotFoundError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the cut first line of the tail, or a torn last one
        if not isinstance(record, dict):
            continue
        error_type = record.get("error_type")
        if isinstance(error_type, str) and error_type != "cancelled":
            return record
    return None
