"""retrying: the backoff ceiling and jitter, Retry-After hints, and when a row stops retrying.

The conftest zeroes backoff process-wide; tests of the real backoff turn that off for their
own duration (`live_backoff`). Nothing here sleeps: tenacity's sleep is replaced by a recorder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from batchrunner import retrying
from batchrunner.errors import PermanentError, RetryableError
from batchrunner.retrying import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tenacity import AsyncRetrying

pytestmark = pytest.mark.anyio

SAMPLES = 300


@pytest.fixture
def live_backoff() -> Iterator[None]:
    """The real backoff for this test; the conftest's zeroing is restored afterwards."""
    retrying.set_testing(False)
    yield
    retrying.set_testing(True)


def hinted(seconds: float) -> RetryableError:
    return RetryableError("rate_limit_error", "slow down", http_status=429, retry_after=seconds)


def transient() -> RetryableError:
    return RetryableError("overloaded_error", "Overloaded", http_status=529)


def ceiling(policy: RetryPolicy, n: int) -> float:
    return min(policy.wait_max, policy.wait_initial * 2.0 ** (n - 1))


# --- backoff and hints ----------------------------------------------------------------------


@pytest.mark.usefixtures("live_backoff")
def test_backoff_without_jitter_is_the_ceiling() -> None:
    """Without jitter the n-th wait is wait_initial * 2**(n-1), capped at wait_max."""
    policy = RetryPolicy(jitter=False, wait_initial=0.5, wait_max=30.0)
    assert [policy.backoff(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.backoff(0) == 0.5  # a retry number below 1 never waits less than the first


@pytest.mark.usefixtures("live_backoff")
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_backoff_with_jitter_spans_zero_to_the_ceiling(n: int) -> None:
    """Full jitter: each wait lies in [0, ceiling], and the waits spread over that range."""
    policy = RetryPolicy(wait_initial=0.5, wait_max=30.0)
    top = ceiling(policy, n)
    waits = [policy.backoff(n) for _ in range(SAMPLES)]
    assert all(0.0 <= w <= top for w in waits)
    # With 300 uniform draws, missing either half has odds of 2**-300.
    assert min(waits) < top / 2 < max(waits)


@pytest.mark.usefixtures("live_backoff")
@pytest.mark.parametrize("r", [0.25, 3.0, 45.0])
def test_hint_sets_a_floor_with_ten_percent_jitter(r: float) -> None:
    """With a Retry-After of r the wait lies in [r, 1.1 r], whatever the retry number."""
    policy = RetryPolicy()
    waits = [policy.wait_for(hinted(r), n) for n in (1, 4, 12) for _ in range(SAMPLES // 3)]
    assert all(r <= w <= 1.1 * r for w in waits)
    assert min(waits) < 1.05 * r < max(waits)
    assert RetryPolicy(jitter=False).wait_for(hinted(r), 7) == r


@pytest.mark.usefixtures("live_backoff")
@pytest.mark.parametrize("r", [60.5, 300.0, 1e9])
def test_a_hint_over_the_cap_waits_the_cap(r: float) -> None:
    """A Retry-After over max_wait_s waits max_wait_s (+ up to 10%), and the row retries."""
    policy = RetryPolicy(max_wait_s=60.0)
    waits = [policy.wait_for(hinted(r), n) for n in (1, 4) for _ in range(SAMPLES // 2)]
    assert all(60.0 <= w <= 66.0 for w in waits)
    assert policy.should_retry(hinted(r))
    assert policy.first_wait(hinted(r), elapsed_s=0.0) is not None
    assert RetryPolicy.testing(max_wait_s=2.0).wait_for(hinted(r), 1) == 2.0


@pytest.mark.usefixtures("live_backoff")
def test_hint_wins_over_a_longer_backoff() -> None:
    """A short hint is honoured as is, even where the backoff ceiling is far longer."""
    policy = RetryPolicy(jitter=False, wait_initial=10.0, wait_max=60.0)
    assert policy.wait_for(hinted(0.5), 5) == 0.5
    assert policy.wait_for(transient(), 5) == 60.0


@pytest.mark.usefixtures("live_backoff")
def test_zero_or_no_hint_falls_back_to_backoff() -> None:
    """A Retry-After of 0 (or none, or a non-retryable error) means the policy's own backoff."""
    policy = RetryPolicy(jitter=False, wait_initial=1.0)
    assert policy.wait_for(hinted(0.0), 3) == 4.0
    assert policy.wait_for(transient(), 2) == 2.0
    assert policy.wait_for(None, 1) == 1.0


def test_testing_switch_zeroes_backoff_but_keeps_the_hint() -> None:
    """Under set_testing(True) (the conftest's state) backoff is 0 and a hint still holds."""
    policy = RetryPolicy()
    assert all(policy.backoff(n) == 0.0 for n in range(1, 10))
    assert policy.wait_for(transient(), 4) == 0.0
    assert 2.0 <= policy.wait_for(hinted(2.0), 4) <= 2.2


@pytest.mark.usefixtures("live_backoff")
def test_testing_policy() -> None:
    """RetryPolicy.testing(): zero backoff, no jitter, the hint kept exactly, overrides kept."""
    policy = RetryPolicy.testing(max_attempts=3, retry_after_max=5.0)
    assert (policy.wait_initial, policy.wait_max, policy.jitter) == (0.0, 0.0, False)
    assert (policy.max_attempts, policy.retry_after_max) == (3, 5.0)
    assert all(policy.backoff(n) == 0.0 for n in range(1, 10))
    assert policy.wait_for(hinted(1.5), 2) == 1.5
    assert policy.first_wait(hinted(1.5), elapsed_s=0.0) == 1.5


# --- should_retry and first_wait --------------------------------------------------------------


def test_should_retry() -> None:
    """Retryable errors are retried unless their Retry-After exceeds retry_after_max."""
    policy = RetryPolicy(retry_after_max=300.0)
    assert policy.should_retry(transient())
    assert policy.should_retry(hinted(300.0))
    assert not policy.should_retry(hinted(300.5))
    assert not policy.should_retry(PermanentError("invalid_request_error", "bad", http_status=400))
    assert not policy.should_retry(ValueError("not ours"))


@pytest.mark.usefixtures("live_backoff")
def test_first_wait() -> None:
    """The first wait is the backoff for retry 1, or the hint; None when the row must stop."""
    policy = RetryPolicy(jitter=False, wait_initial=0.5, max_elapsed_s=15.0)
    assert policy.first_wait(transient(), elapsed_s=0.0) == 0.5
    assert policy.first_wait(hinted(10.0), elapsed_s=4.0) == 10.0
    # elapsed + wait must stay under max_elapsed_s
    assert policy.first_wait(hinted(10.0), elapsed_s=5.0) is None
    assert policy.first_wait(transient(), elapsed_s=14.6) is None
    assert RetryPolicy(max_attempts=1).first_wait(transient(), elapsed_s=0.0) is None
    permanent = PermanentError("authentication_error", "no", http_status=401)
    assert policy.first_wait(permanent, elapsed_s=0.0) is None
    assert policy.first_wait(hinted(301.0), elapsed_s=0.0) is None


# --- retrying(): the tenacity controller ----------------------------------------------------


class Recorder:
    """Stands in for tenacity's sleep: records each wait instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def controller(
    policy: RetryPolicy, *, attempts_made: int = 0, elapsed_s: float = 0.0
) -> tuple[AsyncRetrying, Recorder]:
    recorder = Recorder()
    retrying_ = policy.retrying(attempts_made=attempts_made, elapsed_s=elapsed_s)
    return retrying_.copy(sleep=recorder), recorder


async def drive(retrying_: AsyncRetrying, errors: list[BaseException | None]) -> int:
    """Run attempts that raise errors[i] (the last one repeating; None succeeds); count them."""
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        error = errors[min(calls, len(errors) - 1)]
        calls += 1
        if error is not None:
            raise error

    async for state in retrying_:
        with state:
            await attempt()
    return calls


@pytest.mark.parametrize(("max_attempts", "made"), [(6, 1), (6, 0), (3, 1), (2, 1)])
async def test_retrying_continues_the_attempt_count(max_attempts: int, made: int) -> None:
    """retrying(attempts_made=k) allows max_attempts - k more calls, then re-raises."""
    policy = RetryPolicy.testing(max_attempts=max_attempts)
    retrying_, recorder = controller(policy, attempts_made=made)
    calls = 0

    async def always_fails() -> None:
        nonlocal calls
        calls += 1
        raise transient()

    with pytest.raises(RetryableError, match="Overloaded"):
        async for state in retrying_:
            with state:
                await always_fails()
    assert calls == max_attempts - made
    assert len(recorder.waits) == calls - 1


async def test_retrying_stops_on_permanent_and_returns_on_success() -> None:
    """A permanent error ends the retries at once; a success ends them too."""
    policy = RetryPolicy.testing(max_attempts=6)
    permanent = PermanentError("invalid_request_error", "bad", http_status=400)
    retrying_, _ = controller(policy, attempts_made=1)
    with pytest.raises(PermanentError):
        await drive(retrying_, [transient(), permanent])
    retrying_, _ = controller(policy, attempts_made=1)
    assert await drive(retrying_, [transient(), transient(), None]) == 3


@pytest.mark.usefixtures("live_backoff")
async def test_retrying_waits_continue_from_the_first_retry() -> None:
    """After attempts_made=1 the waits are those of retries 2, 3, ... (first_wait was 1)."""
    policy = RetryPolicy(jitter=False, wait_initial=0.5, wait_max=30.0, max_attempts=6)
    retrying_, recorder = controller(policy, attempts_made=1)
    with pytest.raises(RetryableError):
        await drive(retrying_, [transient()])
    assert policy.first_wait(transient(), elapsed_s=0.0) == 0.5
    assert recorder.waits == [1.0, 2.0, 4.0, 8.0]


async def test_retrying_honours_hints_and_the_cap() -> None:
    """Tenacity waits the hint exactly (testing policy), and a hint over the cap stops it."""
    policy = RetryPolicy.testing(max_attempts=6, retry_after_max=60.0)
    retrying_, recorder = controller(policy, attempts_made=1)
    with pytest.raises(RetryableError) as caught:
        await drive(retrying_, [hinted(2.0), transient(), hinted(61.0)])
    assert recorder.waits == [2.0, 0.0]
    assert caught.value.retry_after == 61.0


async def test_retrying_respects_the_time_budget() -> None:
    """A wait that would pass max_elapsed_s (counting time already spent) stops the row."""
    policy = RetryPolicy.testing(max_attempts=6, max_elapsed_s=10.0)
    retrying_, recorder = controller(policy, attempts_made=1, elapsed_s=7.0)
    with pytest.raises(RetryableError):
        await drive(retrying_, [hinted(1.0), hinted(5.0)])
    assert recorder.waits == [1.0]
    retrying_, recorder = controller(policy, attempts_made=1, elapsed_s=0.0)
    assert await drive(retrying_, [hinted(1.0), hinted(5.0), None]) == 3
    assert recorder.waits == [1.0, 5.0]
