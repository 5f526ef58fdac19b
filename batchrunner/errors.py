"""The exception tree. Every failure has a place here; each knows its exit code.

```
BatchRunnerError                exit 1
├── ConfigError                 exit 2: bad flags, job file or environment (nothing sent)
├── SourceError                 exit 2: unreadable input, malformed row, duplicate id
├── OutputError                 exit 2: run dir belongs to another run, is locked, or corrupt
├── DiskError                   exit 3: the run dir cannot be written (ENOSPC, EROFS, EMFILE)
├── IntegrityError              exit 1: the run dir's data does not add up; nothing was deleted
├── RunAbortedError             exit 3: stopped by a run-level cause, rows left pending
├── InterruptedRunError         exit 130: SIGINT; what arrived is kept
│   └── TerminatedRunError      exit 143: SIGTERM; the same
└── RequestError                one row, one attempt; recorded as data, never raised past runner
    ├── RetryableError          429, 5xx, 408, 409, timeouts, connection errors, bad bodies
    └── PermanentError          other 4xx
```

The exit codes of `batchrunner run` (INTERFACE.md):

| code | meaning |
|---|---|
| 0 | every row succeeded |
| 1 | the run finished, some rows errored |
| 2 | usage, job-file or input error: nothing was sent |
| 3 | stopped early with rows pending by a run-level cause (see below) |
| 130 | SIGINT |
| 143 | SIGTERM |

Run-level causes: key refused, quota, unknown model, non-API base URL, the failure breaker,
the input changed under the run, the server asking again and again for waits over the
cap, a run directory that cannot be written (disk full, out of file descriptors). A run
never exits 0 or 1 with rows pending, and never 2 once a request was sent. Messages are
composed from fields, and never include the API key.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

# The process (EMFILE) or the system (ENFILE) ran out of file descriptors.
FD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})


class BatchRunnerError(Exception):
    """Base of everything batchrunner raises on purpose."""

    exit_code: ClassVar[int] = 1


class ConfigError(BatchRunnerError):
    """Bad flags, job file or environment; raised before anything is sent."""

    exit_code: ClassVar[int] = 2


class SourceError(BatchRunnerError):
    """The input cannot be read or a row cannot become a request."""

    exit_code: ClassVar[int] = 2

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}" if where else reason)


class OutputError(BatchRunnerError):
    """The run directory belongs to another run, is locked, or cannot be used."""

    exit_code: ClassVar[int] = 2


class DiskError(BatchRunnerError):
    """The run directory cannot be written (disk full, read-only, no file descriptors left)."""

    exit_code: ClassVar[int] = 3


def write_error(exc: OSError | DiskError, run_dir: Path | str) -> DiskError:
    """An OSError from writing the run directory, as the run-level DiskError.

    journal.py maps "the disk refuses" errnos (ENOSPC, EROFS, ...) itself; this maps the
    rest, EMFILE/ENFILE (out of file descriptors) with advice of its own.
    """
    if isinstance(exc, DiskError):
        return exc
    reason = exc.strerror or str(exc)
    if exc.errno in FD_ERRNOS:
        return DiskError(
            f"cannot open a file in {run_dir}: {reason}; raise the open-file limit "
            "(ulimit -n) or lower --concurrency, and run the same command again to resume"
        )
    return DiskError(f"cannot write to {run_dir}: {reason}; run the same command again to resume")


class IntegrityError(BatchRunnerError):
    """The run dir's data does not add up: a complete journal line that is not an outcome,
    a part missing rows of its segment, results short of the recorded outcomes, duplicate
    ids. Raised instead of finishing short; the journal and parts are kept as they are."""

    exit_code: ClassVar[int] = 1


class RunAbortedError(BatchRunnerError):
    """A run-level cause stopped the run with rows pending (bad key, unknown model, no
    quota, a breaker, the input changed, waits over the cap): fix it, run again to resume."""

    exit_code: ClassVar[int] = 3


class InterruptedRunError(BatchRunnerError):
    """The run was interrupted by SIGINT; what was received is recorded."""

    exit_code: ClassVar[int] = 130


class TerminatedRunError(InterruptedRunError):
    """The run was stopped by SIGTERM; what was received is recorded."""

    exit_code: ClassVar[int] = 143


class RequestError(BatchRunnerError):
    """One attempt of one request failed.

    `error_type` uses INTERFACE.md's names (`rate_limit_error`, `timeout`,
    `connection_error`, `invalid_response`, or the server's `error.type`).
    """

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        http_status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.error_type = error_type
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        self.retry_after = retry_after
        self.code = code
        self.headers: Mapping[str, str] = headers or {}  # lower-case names; pacing reads them
        status = f"HTTP {http_status} " if http_status is not None else ""
        super().__init__(f"{status}{error_type}: {message}")


class RetryableError(RequestError):
    """A transient failure: worth another attempt after a wait."""


class PermanentError(RequestError):
    """A failure that another attempt would repeat (a 4xx other than 408/409/429)."""


def run_level_error(
    group: BaseExceptionGroup[BaseException], run_dir: Path | str, *, sent: bool
) -> BatchRunnerError | None:
    """The error a run's task group should leave with: the first BatchRunnerError in it,
    or EMFILE/ENFILE as a DiskError; None when it holds neither (a bug: let it show).

    Once requests were `sent`, an error that means "nothing was sent" (exit 2, say a
    SourceError while reading) is no longer true: it becomes a stop with rows pending.
    """
    leaves = _leaves(group)
    for exc in leaves:
        if isinstance(exc, BatchRunnerError):
            if sent and exc.exit_code == 2:
                return RunAbortedError(f"run stopped: {exc}")
            return exc
    for exc in leaves:
        if isinstance(exc, OSError) and exc.errno in FD_ERRNOS:
            return write_error(exc, run_dir)
    return None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out
