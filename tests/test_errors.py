"""errors: request errors made complete once, one set of quota codes, one stop reason per run."""

from __future__ import annotations

import signal

import pytest

from batchrunner.errors import (
    QUOTA_CODES,
    DiskError,
    InterruptedRunError,
    PermanentError,
    ResponseFormatError,
    RetryableError,
    RunAbortedError,
    StopReason,
    TerminatedRunError,
    quota_refusal,
)


def test_a_request_error_cannot_be_patched_after_it_is_made() -> None:
    """Its fields are fixed (str() was composed from them); `remade` gives a new error of
    the same class whose message says the new fields."""
    err = ResponseFormatError("response has no id")
    assert str(err) == "invalid_response: response has no id"
    for field in ("http_status", "request_id", "message", "error_type", "headers"):
        with pytest.raises(AttributeError, match="fixed when the error is made"):
            setattr(err, field, None)
    done = err.remade(http_status=200, request_id="req_1", headers={"request-id": "req_1"})
    assert type(done) is ResponseFormatError and done is not err
    assert (done.http_status, done.request_id, done.error_type) == (
        200,
        "req_1",
        "invalid_response",
    )
    assert str(done) == "HTTP 200 invalid_response: response has no id"
    assert err.http_status is None  # the original is untouched
    assert isinstance(done, RetryableError)  # a garbled 2xx is retried


@pytest.mark.parametrize("code", sorted(QUOTA_CODES))
def test_every_quota_code_is_a_quota_refusal_as_type_or_code(code: str) -> None:
    """Each code counts in the error's type or code, in any case; so does HTTP 402."""
    assert quota_refusal(429, None, code) and quota_refusal(400, code.upper(), None)
    assert PermanentError("invalid_request_error", "x", http_status=429, code=code).is_quota
    assert quota_refusal(402, None, None)
    assert not quota_refusal(429, "rate_limit_error", None)


def test_the_first_stop_reason_stands_but_a_disk_error_replaces_it() -> None:
    """A later cause does not replace the first; a run dir refusing writes replaces any."""
    abort = StopReason("unknown model 'x'")
    sigint = StopReason.from_signal(signal.SIGINT)
    disk = StopReason("cannot write to run: No space left on device", DiskError)
    assert abort.replaces(None) and not sigint.replaces(abort) and not abort.replaces(sigint)
    assert disk.replaces(abort) and disk.replaces(sigint) and not disk.replaces(disk)
    # What the progress line says while the run stops.
    assert (abort.shown, sigint.shown) == (abort.why, "SIGINT: finishing requests in flight")


@pytest.mark.parametrize(
    ("reason", "error", "code", "message"),
    [
        (StopReason("no quota"), RunAbortedError, 3, "run stopped: no quota (5 pending)"),
        (StopReason("disk full", DiskError), DiskError, 3, "disk full (5 pending)"),
        (
            StopReason.from_signal(signal.SIGINT),
            InterruptedRunError,
            130,
            "interrupted by SIGINT: 5 pending; run the same command again to resume",
        ),
        (
            StopReason.from_signal(signal.SIGTERM),
            TerminatedRunError,
            143,
            "interrupted by SIGTERM: 5 pending; run the same command again to resume",
        ),
    ],
)
def test_a_stop_reason_carries_its_error_and_exit_code(
    reason: StopReason, error: type[Exception], code: int, message: str
) -> None:
    """Each reason ends the run with its own error, exit code and message."""
    exc = reason.exception("5 pending")
    assert type(exc) is error and exc.exit_code == code and str(exc) == message
    assert reason.run_level is (code == 3)
