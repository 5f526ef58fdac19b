"""The retry policy: which failures get another attempt, and how long to wait first.

A small named policy on tenacity's engine (stamina's idea). Callers say what is retryable;
attempts *and* time are capped; `RetryPolicy.testing()` zeroes the backoff waits while still
honouring the server's Retry-After, so tests never sleep on our account.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

from batchrunner.errors import RetryableError

_testing = False


def set_testing(on: bool) -> None:
    """Zero every backoff wait process-wide (stamina's `set_testing`); Retry-After still holds.

    For test suites that drive the CLI in-process and cannot hand it a policy.
    """
    global _testing
    _testing = on


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How many attempts, for how long, with which waits.

    Without a server hint the n-th retry waits ``uniform(0, min(wait_max, wait_initial *
    2**(n-1)))`` ("full jitter": spreads a thundering herd of retries evenly). With a
    Retry-After of ``r`` seconds it waits ``c + uniform(0, 0.1 * c)`` where ``c = min(r,
    max_wait_s)``: never sooner than the server asked, unless it asked for more than the cap
    (one wait of a run is never longer than that; the pacer counts such asks and stops the
    run when they persist). A Retry-After above ``retry_after_max`` (off unless set) ends
    the row's retries instead.
    """

    max_attempts: int = 6
    max_elapsed_s: float = 900.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    jitter: bool = True
    max_wait_s: float = 60.0
    retry_after_max: float = math.inf

    @classmethod
    def testing(cls, **overrides: float | int | bool) -> RetryPolicy:
        """Zero backoff, no jitter; the server's Retry-After is still honoured."""
        return replace(cls(wait_initial=0.0, wait_max=0.0, jitter=False), **overrides)  # type: ignore[arg-type]

    def backoff(self, retry_number: int) -> float:
        if _testing:
            return 0.0
        ceiling = min(self.wait_max, self.wait_initial * 2 ** max(0, retry_number - 1))
        return random.uniform(0.0, ceiling) if self.jitter else ceiling

    def wait_for(self, exc: BaseException | None, retry_number: int) -> float:
        hint = exc.retry_after if isinstance(exc, RetryableError) else None
        if hint is not None and hint > 0:
            hint = min(hint, self.max_wait_s)
            return hint + (random.uniform(0.0, 0.1 * hint) if self.jitter else 0.0)
        return self.backoff(retry_number)

    def should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, RetryableError):
            return False
        return exc.retry_after is None or exc.retry_after <= self.retry_after_max

    def first_wait(self, exc: BaseException, *, elapsed_s: float) -> float | None:
        """The wait before attempt 2, or None when the first failure ends the row.

        The same decisions tenacity makes for later attempts (retryable? attempts left?
        would the wait overrun `max_elapsed_s`?), for the first failure only.
        """
        if self.max_attempts < 2 or not self.should_retry(exc):
            return None
        wait = self.wait_for(exc, 1)
        return wait if elapsed_s + wait < self.max_elapsed_s else None

    def retrying(self, *, attempts_made: int = 0, elapsed_s: float = 0.0) -> AsyncRetrying:
        """A fresh tenacity controller for one row; every argument spelled out.

        `attempts_made`/`elapsed_s` continue a row whose first attempt ran outside tenacity
        (the common case costs no tenacity machinery: ~0.1 ms of CPU per row here).
        """

        def _wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return self.wait_for(exc, state.attempt_number + attempts_made)

        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts - attempts_made)
            | stop_before_delay(self.max_elapsed_s - elapsed_s),
            wait=_wait,
            retry=retry_if_exception(self.should_retry),
            sleep=anyio.sleep,
            reraise=True,
        )
