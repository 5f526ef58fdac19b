"""Run-level failure classification and the consecutive-failure breaker."""

from __future__ import annotations

import pytest

from batchrunner.breakers import FailureStreak, not_an_api, run_failure
from batchrunner.errors import PermanentError, RequestError, RetryableError
from batchrunner.redaction import redact

KEY = "sk-live-abcdef0123456789"


def test_401_names_the_key_variable_and_quotes_the_server_without_the_key() -> None:
    """A refused key stops the run, quotes the server's message with anything key-shaped
    redacted (OpenAI's shows part of the key), and says to check CAICAINI_API_KEY."""
    err = PermanentError(
        "invalid_request_error",
        f"Incorrect API key provided: {KEY}. Also sk-abc***wxyz.",
        http_status=401,
        code="invalid_api_key",
    )
    message = run_failure(err)
    assert message == (
        'the API key was refused (HTTP 401 invalid_request_error: "Incorrect API key '
        'provided: [redacted] Also [redacted]"): check CAICAINI_API_KEY, '
        "then run the same command again to resume"
    )
    assert KEY not in message and "wxyz" not in message


def test_authentication_error_type_without_status_still_stops() -> None:
    """An `authentication_error` (as in an Anthropic stream's error event) is run-level too."""
    message = run_failure(RequestError("authentication_error", "invalid x-api-key"))
    assert message is not None
    assert "CAICAINI_API_KEY" in message


def test_403_permission() -> None:
    """A 403 stops the run and points at the key's permissions, quoting the server."""
    err = PermanentError("permission_error", "Country not supported", http_status=403)
    message = run_failure(err)
    assert message is not None
    assert message.startswith("the API key is not allowed to do this (HTTP 403 permission_error")
    assert '"Country not supported"' in message
    assert "permissions" in message
    assert message.endswith("then run the same command again to resume")


@pytest.mark.parametrize(
    ("err", "model"),
    [
        (
            PermanentError(
                "invalid_request_error",
                "The model `gpt-9` does not exist or you do not have access to it.",
                http_status=404,
                code="model_not_found",
            ),
            "gpt-9",
        ),
        (PermanentError("not_found_error", "model: claude-nope", http_status=404), "claude-nope"),
        (RequestError("not_found_error", "model 'x-1' not found"), "x-1"),
    ],
)
def test_unknown_model_names_it_and_the_flag(err: RequestError, model: str) -> None:
    """A 404 about a model names the model and says to use --model."""
    message = run_failure(err)
    assert message is not None
    assert message.startswith(f"unknown model '{model}' (")
    assert "--model" in message


def test_unknown_model_advice_depends_on_whether_rows_are_recorded() -> None:
    """With nothing recorded the advice is --model and the same command (the run directory
    takes the new model); with rows recorded it is a new run directory, since a resume
    there must keep the model."""
    err = PermanentError("not_found_error", "model: nope", http_status=404)
    fresh = run_failure(err)
    assert fresh is not None
    assert "use --model" in fresh and "then run the same command again to resume" in fresh
    assert "no row is recorded yet" in fresh
    locked = run_failure(err, settings_locked=True)
    assert locked is not None
    assert '"model: nope"' in locked and "--model" in locked
    assert "new run directory (-o NEW_DIR)" in locked and "same command" not in locked


def test_unknown_model_without_a_name_in_the_message() -> None:
    """A `model_not_found` whose message names no model still stops the run."""
    err = PermanentError(
        "invalid_request_error", "no such thing", http_status=404, code="model_not_found"
    )
    message = run_failure(err)
    assert message is not None
    assert message.startswith("unknown model (HTTP 404")


def test_other_404_points_at_the_base_url() -> None:
    """A 404 that is not about a model means the endpoint is wrong: check the base URL."""
    message = run_failure(PermanentError("not_found_error", "Not Found", http_status=404))
    assert message is not None
    assert "base URL" in message
    assert "/v1" in message


@pytest.mark.parametrize(
    "err",
    [
        RetryableError(
            "insufficient_quota",
            "You exceeded your current quota",
            http_status=429,
            code="insufficient_quota",
        ),
        RetryableError(
            "requests",
            "You exceeded your current quota",
            http_status=429,
            code="insufficient_quota",
        ),
        RetryableError(
            "rate_limit_error",
            "You have reached your specified API usage limits.",
            http_status=429,
            code="enforced_spend_limit_reached",
        ),
        PermanentError("billing_error", "Your credit balance is too low", http_status=400),
        PermanentError("invalid_request_error", "Payment required", http_status=402),
    ],
)
def test_quota_and_billing_stop_the_run(err: RequestError) -> None:
    """No quota, no credit or a spend limit stops the run and says to add credit."""
    message = run_failure(err)
    assert message is not None
    assert message.startswith("the account has no quota or credit left (")
    assert "spend limit" in message


@pytest.mark.parametrize(
    "err",
    [
        RetryableError("rate_limit_error", "slow down", http_status=429, retry_after=1.0),
        RetryableError("overloaded_error", "Overloaded", http_status=529),
        RetryableError("api_error", "boom", http_status=500),
        RetryableError("timeout", "no answer in 120 s"),
        RetryableError("connection_error", "connection reset"),
        PermanentError("invalid_request_error", "max_tokens: Field required", http_status=400),
        PermanentError("request_too_large", "too big", http_status=413),
        PermanentError("invalid_request_error", "bad model parameter", http_status=400),
    ],
)
def test_row_level_errors_are_not_run_failures(err: RequestError) -> None:
    """Rate limits, overloads, server errors, timeouts and bad rows stay one row's problem."""
    assert run_failure(err) is None


def test_quoted_server_text_is_redacted() -> None:
    """A key or bearer token echoed by the server never reaches a run-level message."""
    err = PermanentError("permission_error", f"key {KEY} (Bearer abc.def) may not", http_status=403)
    message = run_failure(err)
    assert message is not None
    assert KEY not in message
    assert "abc.def" not in message
    assert redact(f"use {KEY} now") == "use [redacted] now"


def test_streak_trips_after_k_failures_in_a_row() -> None:
    """The breaker trips on the k-th consecutive failure and a success resets it."""
    streak: FailureStreak[object] = FailureStreak(3)
    assert [streak.observe(False) for _ in range(2)] == [False, False]
    assert not streak.observe(True)
    assert [streak.observe(False) for _ in range(3)] == [False, False, True]
    assert streak.observe(False)
    assert not streak.observe(True)


def test_streak_of_zero_is_off() -> None:
    """k = 0 never trips."""
    streak: FailureStreak[object] = FailureStreak(0)
    assert not any(streak.observe(False) for _ in range(1000))


def test_streak_message_names_the_cause_and_the_fix() -> None:
    """The message says how many rows failed, quotes the last error (redacted), says the rows
    are pending and that a plain resume (no --retry-errors) sends them again."""
    streak: FailureStreak[object] = FailureStreak(50)
    message = streak.message(f"HTTP 502 bad gateway via {KEY}")
    assert message.startswith(
        'the last 50 rows all failed (the last one: "HTTP 502 bad gateway via [redacted]")'
    )
    assert "left pending" in message and "--retry-errors" not in message
    assert "`batchrunner report DIR` shows the last error" in message
    assert message.endswith("then run the same command again to resume")
    assert KEY not in message
    assert "the last 50 rows all failed; they are left pending" in FailureStreak(50).message()


def test_streak_message_names_the_run_dir_and_a_new_one_when_settings_are_locked() -> None:
    """The report command names the run directory (shell-quoted); with rows recorded, a
    fix in the settings is said to need a new run directory."""
    streak: FailureStreak[object] = FailureStreak(5)
    message = streak.message("HTTP 400 invalid_request_error: bad", "runs/my night", True)
    assert "`batchrunner report 'runs/my night'`" in message
    assert message.endswith(
        "needs a new run directory (-o NEW_DIR), as this one holds recorded rows"
    )


def test_streak_refuses_a_negative_window() -> None:
    """A negative window is a configuration mistake."""
    with pytest.raises(ValueError, match="window"):
        FailureStreak(-1)


MODELS = "http://127.0.0.1:8000/v1/models"


@pytest.mark.parametrize(
    ("err", "said"),
    [
        (PermanentError("invalid_request_error", "Not Found", http_status=404), "HTTP 404"),
        (PermanentError("invalid_request_error", "", http_status=405), "HTTP 405"),
        (RetryableError("api_error", "Not Implemented", http_status=501), "HTTP 501"),
        (
            PermanentError(
                "invalid_request_error",
                "The plain HTTP request was sent to HTTPS port",
                http_status=400,
                headers={"content-type": "text/html"},
            ),
            "sent to HTTPS port",
        ),
        (
            PermanentError(
                "invalid_request_error",
                "moved",
                http_status=301,
                headers={"location": "https://example.test/v1/models"},
            ),
            "HTTP 301 redirecting to https://example.test/v1/models",
        ),
        (
            RetryableError(
                "invalid_response",
                "the 200 response body is not a JSON object",
                http_status=200,
                headers={"content-type": "text/html; charset=utf-8"},
            ),
            "not a JSON object (text/html)",
        ),
    ],
)
def test_answers_of_a_web_server_are_not_an_api(err: RequestError, said: str) -> None:
    """Redirects, 404/405/501, a non-JSON 400 or 2xx: the message names the URL and the fix."""
    message = not_an_api(MODELS, err)
    assert message is not None
    assert message.startswith("http://127.0.0.1:8000/v1 does not answer like the Caicaini API")
    assert said in message and "--base-url" in message
    assert message.endswith("then run the same command again to resume")


@pytest.mark.parametrize(
    "err",
    [
        RetryableError("api_error", "Internal", http_status=500),
        RetryableError("overloaded_error", "Overloaded", http_status=529),
        PermanentError("authentication_error", "invalid x-api-key", http_status=401),
        PermanentError(
            "invalid_request_error",
            "bad limit",
            http_status=400,
            headers={"content-type": "application/json"},
        ),
        RetryableError("connection_error", "connection refused"),
    ],
)
def test_the_apis_own_answers_are_not_judged_here(err: RequestError) -> None:
    """A 5xx, a refused key, a JSON 400 or no answer at all say nothing about the URL."""
    assert not_an_api(MODELS, err) is None
