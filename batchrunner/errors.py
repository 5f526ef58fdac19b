"""The exception tree. Every failure has a place here; each knows its exit code.

```
BatchRunnerError                exit 1
├── ConfigError                 exit 2: bad flags, job file or environment (nothing sent)
├── SourceError                 exit 2: unreadable input, malformed row, duplicate id
├── OutputError                 exit 2: run dir belongs to another run, is locked, or corrupt
├── DiskError                   exit 1: the run dir cannot be written (ENOSPC, EROFS, EACCES)
├── IntegrityError              exit 1: the run dir's data does not add up; nothing was deleted
├── RunAbortedError             exit 1: a run-level API failure (bad key, unknown model, quota)
├── InterruptedRunError         exit 130: SIGINT/SIGTERM; what arrived is kept
└── RequestError                one row, one attempt; recorded as data, never raised past runner
    ├── RetryableError          429, 5xx, 408, 409, timeouts, connection errors, bad bodies
    └── PermanentError          other 4xx
```

Messages are composed from fields, and never include the API key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from collections.abc import Mapping


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
    """The run directory cannot be written (disk full, read-only, permissions)."""

    exit_code: ClassVar[int] = 1


class IntegrityError(BatchRunnerError):
    """The run dir's data does not add up: a complete journal line that is not an outcome,
    a part missing rows of its segment, results short of the recorded outcomes, duplicate
    ids. Raised instead of finishing short; the journal and parts are kept as they are."""

    exit_code: ClassVar[int] = 1


class RunAbortedError(BatchRunnerError):
    """A failure that would hit every row (bad key, unknown model, no quota): stop the run."""

    exit_code: ClassVar[int] = 1


class InterruptedRunError(BatchRunnerError):
    """The run was interrupted by a signal; what was received is recorded."""

    exit_code: ClassVar[int] = 130


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
