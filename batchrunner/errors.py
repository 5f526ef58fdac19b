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
    ├── RetryableError          429, 5xx, 408, 409, timeouts, connection errors
    │   ├── ResponseFormatError a 2xx whose body or stream does not fit the convention
    │   └── PeerProtocolError   the peer does not speak HTTP(S) as the URL says (TLS, not HTTP)
    │       └── ConnectionSetupError  an untrusted certificate or a refusing proxy
    ├── PermanentError          other 4xx, a quota refusal, an answer over the size cap
    └── InvalidOutputError      a 2xx whose answer does not fit --json-schema (re-asked
                                up to --output-retries times, apart from the retries)
```

A `RequestError` is made complete, once: the client's error boundary gives it the status
and request id of the answer it is about, and its fields never change after (`str(exc)`
stays true). The exit codes of `batchrunner run` (README, "Exit codes"):

| code | meaning |
|---|---|
| 0 | every row succeeded |
| 1 | the run finished, some rows errored |
| 2 | usage, job-file or input error: nothing was sent |
| 3 | stopped early with rows pending by a run-level cause (see below) |
| 130 | SIGINT |
| 143 | SIGTERM |

Run-level causes: key refused, quota, unknown model, non-API base URL, an untrusted TLS
certificate or a refusing proxy, the failure breaker,
the input changed under the run, the server asking again and again for waits over the
cap, a run directory that cannot be written (disk full, out of file descriptors). A run
that stops holds one `StopReason`, which names the cause and the error it leaves with. A
run never exits 0 or 1 with rows pending, and never 2 once a request was sent. Messages
are composed from fields, and never include the API key.
"""

from __future__ import annotations

import errno
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypedDict, Unpack

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Self

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


@dataclass(frozen=True, slots=True)
class StopReason:
    """Why a run stopped sending with rows left: the one stop state of a run.

    `error` is what the run then ends with, and so its exit code: RunAbortedError (3) for
    a run-level cause (key, quota, model, breaker, input changed, waits over the cap),
    DiskError (3) for a run directory that refuses writes, InterruptedRunError (130) and
    TerminatedRunError (143) for SIGINT and SIGTERM. `why` names the cause.
    """

    why: str
    error: type[BatchRunnerError] = RunAbortedError

    @classmethod
    def from_signal(cls, signum: signal.Signals) -> StopReason:
        interrupted = TerminatedRunError if signum == signal.SIGTERM else InterruptedRunError
        return cls(signum.name, interrupted)

    @property
    def run_level(self) -> bool:
        """A cause every row would meet (not a signal): a row failing now stays pending."""
        return not issubclass(self.error, InterruptedRunError)

    @property
    def shown(self) -> str:
        """The progress line's "stopping: ..."."""
        return self.why if self.run_level else f"{self.why}: finishing requests in flight"

    def replaces(self, current: StopReason | None) -> bool:
        """The first reason stands, except that a run directory refusing writes replaces
        any other: it must be fixed before a resume can work."""
        return current is None or (self.error is DiskError and current.error is not DiskError)

    def exception(self, counts: str) -> BatchRunnerError:
        """The error the run leaves with; `counts` says what is recorded and pending."""
        if self.error is DiskError:
            return DiskError(f"{self.why} ({counts})")
        if self.run_level:
            return RunAbortedError(f"run stopped: {self.why} ({counts})")
        resume = "run the same command again to resume"
        return self.error(f"interrupted by {self.why}: {counts}; {resume}")


# The codes (in an error body's `code`, `type` or Anthropic's `details.error_code`) by
# which the APIs say the account has no quota or credit left. No wait cures them: the
# client does not retry them, and the run stops at the first (breakers.run_failure).
QUOTA_CODES = frozenset(
    {
        "insufficient_quota",  # OpenAI
        "billing_hard_limit_reached",  # OpenAI
        "billing_error",  # Anthropic
        "enforced_spend_limit_reached",  # Anthropic
    }
)


def quota_refusal(status: int | None, *names: str | None) -> bool:
    """Whether an answer says the account has no quota or credit left: HTTP 402, or one of
    `QUOTA_CODES` among `names` (the error's type and code, in any case)."""
    return status == 402 or any(name is not None and name.lower() in QUOTA_CODES for name in names)


class Context(TypedDict, total=False):
    """What a `RequestError` knows besides its type and message."""

    http_status: int | None
    request_id: str | None
    retry_after: float | None
    code: str | None
    headers: Mapping[str, str] | None


class RequestError(BatchRunnerError):
    """One attempt of one request failed.

    `error_type` uses the README's names (`rate_limit_error`, `timeout`,
    `connection_error`, `invalid_response`, or the server's `error.type`). The fields are
    fixed once the error is made: an error that lacks the answer's status is not patched
    but made anew (the client's error boundary does so), so `str(exc)` never goes stale.
    """

    _FIELDS = frozenset(
        {"error_type", "message", "http_status", "request_id", "retry_after", "code", "headers"}
    )

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

    def __setattr__(self, name: str, value: object) -> None:
        if name in self._FIELDS and name in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.{name} is fixed when the error is made")
        super().__setattr__(name, value)

    def remade(
        self,
        *,
        error_type: str | None = None,
        message: str | None = None,
        **changes: Unpack[Context],
    ) -> Self:
        """A new error of the same class, with the fields in `changes` replaced."""
        new = type(self).__new__(type(self))
        RequestError.__init__(
            new,
            self.error_type if error_type is None else error_type,
            self.message if message is None else message,
            **(self._context() | changes),
        )
        return new

    def _context(self) -> Context:
        return Context(
            http_status=self.http_status,
            request_id=self.request_id,
            retry_after=self.retry_after,
            code=self.code,
            headers=self.headers,
        )

    @property
    def is_quota(self) -> bool:
        """The account has no quota or credit left (`quota_refusal`)."""
        return quota_refusal(self.http_status, self.error_type, self.code)


class RetryableError(RequestError):
    """A transient failure: worth another attempt after a wait."""


class ResponseFormatError(RetryableError):
    """A 2xx whose body or stream does not fit the convention (`invalid_response`).

    Retried: a cut or garbled answer is usually a passing fault of the server or a proxy.
    """

    def __init__(self, message: str, **context: Unpack[Context]) -> None:
        super().__init__("invalid_response", message, **context)


class PeerProtocolError(RetryableError):
    """The peer does not speak HTTP(S) as the base URL says: the TLS handshake failed, or
    the answer is not HTTP. A `connection_error` for a row; the preflight stops the run."""

    def __init__(self, message: str, **context: Unpack[Context]) -> None:
        super().__init__("connection_error", message, **context)


class ConnectionSetupError(PeerProtocolError):
    """The connection cannot be made as this machine is set up: the server's TLS
    certificate is not trusted, or the proxy refused the tunnel. The message names the
    setting to fix; the preflight stops the run with it."""


class PermanentError(RequestError):
    """A failure that another attempt would repeat (a 4xx other than 408/409/429, a quota
    refusal, an answer over the size cap)."""


class InvalidOutputError(RequestError):
    """A 2xx whose answer is not JSON or does not match --json-schema (`invalid_output`).

    Not a RetryableError: the retry policy leaves it alone, and the row is asked again on
    its own budget (`--output-retries`), since another attempt is paid for in full.
    """

    def __init__(self, message: str, **context: Unpack[Context]) -> None:
        super().__init__("invalid_output", message, **context)


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
