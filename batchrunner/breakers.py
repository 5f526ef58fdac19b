"""Tell a row's failure from a run's failure: errors that would hit every row stop the run.

`run_failure` classifies one error (bad key, no permission, unknown model or endpoint, no
quota); `not_an_api` judges the preflight's answer (a base URL that is no API at all);
`FailureStreak` trips when the last K rows all failed. All only return messages, naming
the cause and the fix; raising `RunAbortedError` is the runner's call. The client has
already redacted what the server said; quotes are redacted again, as prose, to be sure.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING, Generic, TypeVar

from batchrunner.config import BASE_ENV, KEY_ENV
from batchrunner.redaction import redact

if TYPE_CHECKING:
    from batchrunner.errors import RequestError

T = TypeVar("T")
_RESUME = "then run the same command again to resume"
# What GET {base}/models answers when the base URL is some other web server: not found,
# method not allowed, not implemented.
_NO_API_STATUSES = frozenset({404, 405, 501})
_QUOTED_MODEL = re.compile(r"(?i)\bmodel\W{0,3}?[`'\"]([^`'\"\s]{1,200})[`'\"]")
_BARE_MODEL = re.compile(r"(?i)\bmodel\s*[:=]\s*([^\s,;'\"`]{1,200})")
_MAX_QUOTE = 200


def _label(err: RequestError) -> str:
    status = f"HTTP {err.http_status} " if err.http_status is not None else ""
    return f"{status}{err.error_type}"


def _quote(err: RequestError) -> str:
    """The server's message, redacted and shortened, as `: "..."` (empty when none)."""
    text = " ".join(redact(err.message or "").split())
    if not text:
        return ""
    if len(text) > _MAX_QUOTE:
        text = text[: _MAX_QUOTE - 1] + "…"
    return f': "{text}"'


def _names(err: RequestError) -> set[str]:
    return {name.lower() for name in (err.error_type, err.code) if name}


def _model_named(err: RequestError) -> str | None:
    """The model a 404 is about, when its message says so (either convention's wording)."""
    text = err.message or ""
    match = _QUOTED_MODEL.search(text) or _BARE_MODEL.search(text)
    return redact(match.group(1)) if match else None


def run_failure(err: RequestError, *, settings_locked: bool = False) -> str | None:
    """A message naming the cause and the fix when `err` would hit every row, else None.

    Covered: the key refused (401), no permission (403), an unknown model or endpoint
    (404), no quota or credit (`RequestError.is_quota`: 402, or one of
    `errors.QUOTA_CODES`). Everything else is a row's own failure. `settings_locked`: the
    run directory holds outcomes, so its request settings (the model) cannot change.
    """
    names = _names(err)
    label = _label(err)
    if err.http_status == 401 or "authentication_error" in names or "invalid_api_key" in names:
        # Quoted redacted: OpenAI's message shows part of the key (`sk-abc***xyz`).
        return f"the API key was refused ({label}{_quote(err)}): check {KEY_ENV}, {_RESUME}"
    if err.is_quota:
        return (
            f"the account has no quota or credit left ({label}{_quote(err)}): add credit or "
            f"raise the spend limit with the provider, {_RESUME}"
        )
    if err.http_status == 403 or "permission_error" in names:
        return (
            f"the API key is not allowed to do this ({label}{_quote(err)}): check the key's "
            f"permissions (and the region it is used from) with the provider, {_RESUME}"
        )
    mentions_model = "model" in (err.message or "").lower()
    if "model_not_found" in names or (
        mentions_model and (err.http_status == 404 or "not_found_error" in names)
    ):
        model = _model_named(err)
        which = f"unknown model '{model}'" if model else "unknown model"
        if settings_locked:
            return (
                f"{which} ({label}{_quote(err)}): name a model the API serves with --model "
                "(or `model` in the job file) and a new run directory (-o NEW_DIR); this one "
                "holds rows recorded with the current model, which must stay the same in it"
            )
        return (
            f"{which} ({label}{_quote(err)}): use --model (or `model` in the job file) to "
            f"name a model the API serves, {_RESUME} (no row is recorded yet, so the run "
            "directory takes the new model)"
        )
    if err.http_status == 404:
        return (
            f"the API endpoint was not found ({label}{_quote(err)}): check the base URL "
            f"(--base-url or {BASE_ENV}, which ends in /v1), {_RESUME}"
        )
    return None


def wrong_base_url(url: str, what: str) -> str:
    """The message for a base URL that is not this kind of API: `what` it did instead."""
    return (
        f"{url} does not answer like the Caicaini API: {what}. Check the base URL "
        f"(--base-url or {BASE_ENV}: the API's address ending in /v1, http:// or https:// "
        f"as the server speaks), {_RESUME}"
    )


def cannot_connect(url: str, why: str) -> str:
    """The message for a base URL this machine cannot connect to as it is set up."""
    return f"cannot connect to {url}: {why}, {_RESUME}"


def not_an_api(models_url: str, err: RequestError) -> str | None:
    """The stop message when the preflight's answer shows the base URL is no API, else None.

    A redirect, 404/405/501, a 2xx that is not a JSON object, or a 400 that is not JSON
    (nginx's "plain HTTP request was sent to HTTPS port" page): another web server, or the
    wrong scheme. The API itself answers GET /models with JSON, errors included.
    """
    status = err.http_status
    if status is None:
        return None
    content_type = err.headers.get("content-type", "")
    if 300 <= status < 400:
        where = redact(err.headers.get("location", ""))
        what = f"HTTP {status}" + (f" redirecting to {where}" if where else "")
    elif status in _NO_API_STATUSES or (status == 400 and "json" not in content_type):
        what = f"{_label(err)}{_quote(err)}"
    elif 200 <= status < 300 and err.error_type == "invalid_response":
        kind = content_type.split(";")[0].strip() or "no content type"
        what = f"HTTP {status} with a body that is not a JSON object ({kind})"
    else:
        return None
    return wrong_base_url(models_url.removesuffix("/models"), f"GET {models_url} answered {what}")


class FailureStreak(Generic[T]):
    """Trips when the last `k` rows all failed (`k` = 0 disables it).

    Feed it one outcome per row, after retries: a run where every row fails for a
    reason `run_failure` does not know (a dead proxy, a malformed template) stops after
    `k` rows instead of erroring the whole input. The failed rows of the current streak
    are held here instead of journaled: when the streak trips they are dropped, so they
    stay pending and the resume after the fix sends them again without --retry-errors;
    a success, or the run's end, hands them back as real outcomes. A kill -9 loses them
    the same way (at most `k` rows, which errored anyway, are sent again).
    """

    def __init__(self, k: int) -> None:
        if k < 0:
            raise ValueError(f"the failure window must be >= 0, not {k}")
        self.k = k
        self.streak = 0
        self.held: list[T] = []

    def observe(self, succeeded: bool) -> bool:
        """Record one row's outcome; True when the last `k` outcomes all failed."""
        self.streak = 0 if succeeded else self.streak + 1
        return self.k > 0 and self.streak >= self.k

    def succeeded(self) -> list[T]:
        """A row succeeded: the streak ends, and what it held is returned to be journaled."""
        self.observe(True)
        return self.release()

    def failed(self, outcome: T) -> bool:
        """Hold a failed row's outcome; True when the breaker trips (what was held is
        dropped: those rows stay pending)."""
        self.held.append(outcome)
        if self.observe(False):
            self.held.clear()
            return True
        return False

    def release(self) -> list[T]:
        """The held outcomes, to journal: the streak ended without tripping."""
        held, self.held = self.held, []
        return held

    def message(
        self, last_error: str | None = None, run_dir: str = "DIR", settings_locked: bool = False
    ) -> str:
        """Why the run stops and what to do, quoting the last error (redacted) if given.

        `settings_locked`: the run directory holds outcomes, so a fix that changes request
        settings needs a new one (otherwise the resume takes the new settings).
        """
        last = ""
        if last_error:
            text = " ".join(redact(last_error).split())[:_MAX_QUOTE]
            last = f' (the last one: "{text}")'
        where = (
            "; a fix in the request settings needs a new run directory (-o NEW_DIR), as this "
            "one holds recorded rows"
            if settings_locked
            else ""
        )
        return (
            f"the last {self.k} rows all failed{last}; they are left pending: "
            f"`batchrunner report {shlex.quote(run_dir)}` shows the last error and calls.log "
            f"every attempt; fix the cause, {_RESUME}{where}"
        )
