"""The Pacer: budgets from flags and headers, shared cool-down, AIMD limit, cancellation."""

from __future__ import annotations

import itertools
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
import pytest

from batchrunner.admission import AdmissionClosedError
from batchrunner.budgets import Ramp
from batchrunner.controller import DEFAULT_HORIZON_S
from batchrunner.pacing import MAX_WAIT_S, Pacer
from batchrunner.ratelimits import parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Mapping

pytestmark = pytest.mark.anyio


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def release(
    pacer: Pacer,
    status: int | None = 200,
    *,
    headers: Mapping[str, str] | None = None,
    retry_after: float | None = None,
    cost: int = 0,
    used: int | None = None,
) -> str | None:
    return pacer.release(
        status=status,
        headers=headers or {},
        retry_after=retry_after,
        cost_tokens=cost,
        used_tokens=used,
    )


def rates(pacer: Pacer) -> tuple[float | None, float | None]:
    """(requests, tokens) per second the pacer paces to, from a flag or learned; None when
    unlimited. White-box: the pacer's own budgets, which nothing outside it needs to read."""
    requests, tokens = pacer._budgets.requests(), pacer._budgets.tokens()
    return (requests.rate if requests else None, tokens.rate if tokens else None)


async def acquired_now(pacer: Pacer, cost: int = 0) -> bool:
    """Whether `acquire` gets through without waiting (and then it holds the slot)."""
    with anyio.move_on_after(0.05) as scope:
        await pacer.acquire(cost)
    return not scope.cancelled_caught


async def attempt(pacer: Pacer, go: anyio.Event, status: int, clock: FakeClock, at: float) -> None:
    """One attempt in its own task, as a worker makes it: acquire, wait, release at `at`."""
    await pacer.acquire(0)
    await go.wait()
    clock.now = at
    release(pacer, status)


# A refusal whose headers say the request budget is spent: evidence of a limit.
SPENT = {"x-ratelimit-remaining-requests": "0"}


def crowd(pacer: Pacer, clock: FakeClock, status: int = 529, n: int = 8) -> None:
    """`n` refusals without tickets, a second apart: the eighth in a row is a limit."""
    for _ in range(n):
        clock.now += 1.1
        release(pacer, status, retry_after=0)


async def test_rpm_flag_bursts_one_second_then_paces() -> None:
    """With --rpm 600, ten attempts go at once, the eleventh waits a tenth of a second."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=100, rpm=600, clock=clock)
    assert rates(pacer)[0] == pytest.approx(10.0)
    for _ in range(10):
        assert await acquired_now(pacer)
    assert not await acquired_now(pacer)
    clock.now += 0.05
    assert not await acquired_now(pacer)
    clock.now += 0.06
    assert await acquired_now(pacer)
    assert pacer.in_flight == 11


async def test_tpm_flag_reserves_up_front_and_refunds_from_usage() -> None:
    """Tokens are reserved at acquire and the unused part comes back at release."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=10, tpm=6000, clock=clock)  # 100 tokens/s, 100 at once
    assert await acquired_now(pacer, 100)
    assert not await acquired_now(pacer, 50)
    release(pacer, cost=100, used=40)
    assert await acquired_now(pacer, 50)
    assert not await acquired_now(pacer, 20)
    assert rates(pacer)[1] == pytest.approx(100.0)


async def test_usage_above_the_reservation_is_charged() -> None:
    """A response that used more tokens than reserved takes the difference from the budget."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=10, tpm=6000, clock=clock)
    assert await acquired_now(pacer, 10)
    release(pacer, cost=10, used=100)
    assert not await acquired_now(pacer, 10)
    clock.now += 0.11
    assert await acquired_now(pacer, 10)


async def test_oversize_request_waits_for_a_full_bucket_then_runs_into_debt() -> None:
    """A request costing more than the bucket holds still goes, and later ones pay it back."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=10, tpm=600, clock=clock)  # 10 tokens/s, 10 at once
    assert await acquired_now(pacer, 50)
    clock.now += 4.0
    assert not await acquired_now(pacer, 1)
    clock.now += 0.2
    assert await acquired_now(pacer, 1)


async def test_zero_cost_ignores_the_token_budget() -> None:
    """An attempt that reserves no tokens is not held back by an empty token bucket."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=10, tpm=60, clock=clock)
    assert await acquired_now(pacer, 5)
    assert await acquired_now(pacer, 0)


async def test_cooldown_holds_every_acquire_until_it_ends() -> None:
    """After a 429 saying the budget is spent, with retry-after 0.3 s, no acquire returns
    before the cool-down ends."""
    pacer = Pacer(ramp=False, concurrency=8, probe_s=0)
    await pacer.acquire(0)
    release(pacer, 429, headers=SPENT, retry_after=0.3)
    ends = pacer._cooldown_until
    assert ends == pytest.approx(time.monotonic() + 0.3, abs=0.1)
    returned: list[float] = []

    async def worker() -> None:
        await pacer.acquire(0)
        returned.append(time.monotonic())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(worker)
    assert len(returned) == 4
    assert min(returned) >= ends


@pytest.mark.parametrize(
    ("status", "headers", "retry_after", "pause"),
    [
        (529, SPENT, None, DEFAULT_HORIZON_S),  # a limit that names no wait: 1 s
        (429, {**SPENT, "retry-after": "7"}, None, 7.0),  # the wait from the headers
        (429, SPENT, 86400.0, MAX_WAIT_S),  # capped
        (503, SPENT, 900.0, None),  # only 429/529 pause everyone
        (429, {}, 7.0, None),  # a sporadic 429: only its row waits
    ],
)
async def test_a_limit_pauses_everyone_for_the_retry_after_capped(
    status: int, headers: dict[str, str], retry_after: float | None, pause: float | None
) -> None:
    """The shared pause is the limit's Retry-After (1 s without one), at most the cap."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=8, clock=clock, probe_s=0)
    release(pacer, status, headers=headers, retry_after=retry_after)
    expected = -math.inf if pause is None else clock.now + pause
    assert pacer._cooldown_until == expected


async def test_sporadic_refusals_pause_no_one_and_cut_nothing() -> None:
    """One answer in twenty a 429 or 529 (Retry-After 1 s): no pause, no cut, no pace."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=64, clock=clock, probe_s=0)
    for i in range(2000):
        await pacer.acquire(0)
        clock.now += 0.01
        status = (429, 529)[i % 2] if i % 20 == 7 else 200
        assert release(pacer, status, retry_after=1.0) is None
    assert (pacer._cooldown_until, pacer.limit, pacer.pace, pacer.slowed) == (
        -math.inf,
        64,
        None,
        None,
    )


async def test_a_wave_of_529s_cuts_the_limit_once() -> None:
    """A crowd of 529s for attempts sent before the cut halves the limit once, not once
    each; the crowd still there for an attempt sent after it cuts again."""
    clock = FakeClock(0.0)
    pacer = Pacer(ramp=False, concurrency=64, clock=clock, probe_s=0)
    go = anyio.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(attempt, pacer, go, 529, clock, 1.0)
        await anyio.wait_all_tasks_blocked()
        assert pacer.in_flight == 40
        go.set()
    assert (pacer._aimd.limit, pacer.in_flight) == (32, 0)
    assert pacer.slowed == "HTTP 529: the last 8 answers refused: " + (
        "fewer requests in flight, pause 1 s"
    )

    clock.now = 5.0  # past the cool-down: an attempt sent after the cut counts again
    go = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(attempt, pacer, go, 529, clock, 6.0)
        await anyio.wait_all_tasks_blocked()
        go.set()
    assert pacer._aimd.limit == 16


async def test_limit_never_drops_below_the_floor() -> None:
    """Cuts stop at `min_limit`."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=16, clock=clock, min_limit=3, probe_s=0)
    crowd(pacer, clock, n=40)
    assert pacer._aimd.limit == 3


async def test_529s_without_a_ticket_cut_at_most_once_per_second() -> None:
    """Releases that cannot be matched to their acquire fall back to a one-second window."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=64, clock=clock, probe_s=0)
    crowd(pacer, clock)
    assert pacer._aimd.limit == 32
    clock.now += 0.5
    release(pacer, 529, retry_after=0)
    assert pacer._aimd.limit == 32
    clock.now += 0.6
    release(pacer, 529, retry_after=0)
    assert pacer._aimd.limit == 16


async def test_successes_grow_the_limit_by_one_per_window_up_to_concurrency() -> None:
    """After a cut, `limit` successes add one slot, and the limit never exceeds concurrency."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=6, clock=clock, probe_s=0)
    crowd(pacer, clock)
    assert pacer._aimd.limit == 3
    for _ in range(3):
        release(pacer, 200)
    assert pacer._aimd.limit == 4
    for _ in range(3):
        release(pacer, 200)
    assert pacer._aimd.limit == 4  # 4 successes per step now
    release(pacer, 200)
    assert pacer._aimd.limit == 5
    for _ in range(100):
        release(pacer, 200)
    assert pacer._aimd.limit == 6
    release(pacer, 500)
    release(pacer, None)
    assert pacer._aimd.limit == 6  # other failures neither grow nor cut


async def test_the_adaptive_limit_bounds_attempts_in_flight() -> None:
    """With the limit cut to 2, a third attempt waits until a slot is released."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=4, clock=clock, probe_s=0)
    crowd(pacer, clock)
    assert pacer._aimd.limit == 2
    assert await acquired_now(pacer)
    assert await acquired_now(pacer)
    assert not await acquired_now(pacer)
    assert pacer.in_flight == 2
    release(pacer)
    assert await acquired_now(pacer)


async def test_cancelled_waiters_leak_no_slot() -> None:
    """Cancelling tasks blocked in acquire leaves in_flight as it was, and the slot reusable."""
    pacer = Pacer(ramp=False, concurrency=1, probe_s=0)
    await pacer.acquire(0)
    with anyio.move_on_after(0.1):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(pacer.acquire, 0)
    assert pacer.in_flight == 1
    release(pacer)
    assert pacer.in_flight == 0
    assert await acquired_now(pacer)
    assert pacer.in_flight == 1


async def test_a_retry_goes_before_first_attempts_that_waited_longer() -> None:
    """With the only slot busy, a first attempt waits, then a retry: the retry goes first;
    a full in-flight limit is not reported as a wait (the run is at full speed)."""
    pacer = Pacer(ramp=False, concurrency=1, probe_s=0)
    await pacer.acquire(0)
    order: list[str] = []

    async def go(name: str, retry: bool) -> None:
        await pacer.acquire(0, retry=retry)
        order.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(go, "first", False)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(go, "retry", True)
            await anyio.wait_all_tasks_blocked()
            assert pacer.waiting() is None
            release(pacer)
            await anyio.wait_all_tasks_blocked()
            assert order == ["retry"]
            release(pacer)
    assert order == ["retry", "first"]


async def test_a_retry_steps_ahead_of_a_first_attempt_held_by_a_cool_down() -> None:
    """A first attempt waiting out a cool-down at the head of the line steps back for a
    retry that arrives later: when the cool-down ends the retry goes first."""
    pacer = Pacer(ramp=False, concurrency=4, probe_s=0)
    release(pacer, 429, headers=SPENT, retry_after=0.3)
    order: list[str] = []

    async def go(name: str, retry: bool) -> None:
        await pacer.acquire(0, retry=retry)
        order.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(go, "first", False)
            await anyio.sleep(0.05)
            waiting = pacer.waiting()
            assert waiting is not None and "HTTP 429" in waiting
            tg.start_soon(go, "retry", True)
    assert order == ["retry", "first"]


async def test_without_budgets_the_first_attempt_probes_alone() -> None:
    """With nothing known, one attempt goes first; its response opens the way for the rest."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=8, clock=clock)
    assert await acquired_now(pacer)
    assert not await acquired_now(pacer)
    release(pacer)
    for _ in range(8):
        assert await acquired_now(pacer)


async def test_a_silent_probe_lets_the_others_go_after_probe_s() -> None:
    """A probe that never answers holds the others back only for `probe_s`."""
    pacer = Pacer(ramp=False, concurrency=8, probe_s=0.1)
    await pacer.acquire(0)
    started = time.monotonic()
    with anyio.fail_after(5):
        await pacer.acquire(0)
    assert time.monotonic() - started >= 0.09
    assert pacer.in_flight == 2


@pytest.mark.parametrize(("rpm", "tpm"), [(6000, 0), (0, 60000)])
async def test_a_budget_flag_skips_the_probe(rpm: float, tpm: float) -> None:
    """With --rpm or --tpm set there is no probe: the flag already bounds the first wave."""
    pacer = Pacer(ramp=False, concurrency=8, rpm=rpm, tpm=tpm, clock=FakeClock())
    for _ in range(8):
        assert await acquired_now(pacer, 10)


async def test_learns_request_pace_from_openai_headers() -> None:
    """Headers saying 0 of 10 left, full in 1 s, pace requests to 10 per second."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=64, clock=clock)
    await pacer.acquire(0)
    headers = {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
    }
    release(pacer, headers=headers)
    assert rates(pacer)[0] == pytest.approx(10.0)
    assert not await acquired_now(pacer)
    clock.now += 0.11
    assert await acquired_now(pacer)
    assert not await acquired_now(pacer)


async def test_learns_from_anthropic_headers_and_counts_attempts_still_in_flight() -> None:
    """Remaining requests already spent by attempts in flight are not spent twice."""
    clock = FakeClock()
    wall = FakeClock(datetime(2025, 8, 21, 12, 40, 0, tzinfo=UTC).timestamp())
    pacer = Pacer(ramp=False, concurrency=64, clock=clock, wall_clock=wall, probe_s=0)
    await pacer.acquire(0)
    for _ in range(3):
        assert await acquired_now(pacer)  # three more in flight, unknown to the server
    headers = {
        "anthropic-ratelimit-requests-limit": "100",
        "anthropic-ratelimit-requests-remaining": "5",
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:19Z",  # 95 used, full in 19 s
    }
    release(pacer, headers=headers)
    assert rates(pacer)[0] == pytest.approx(5.0)
    assert await acquired_now(pacer)
    assert await acquired_now(pacer)
    assert not await acquired_now(pacer)


async def test_learns_token_pace_and_headers_without_budgets_are_harmless() -> None:
    """Token headers set a token budget; a response without headers changes nothing."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=64, clock=clock, probe_s=0)
    await pacer.acquire(100)
    release(pacer, headers={"content-type": "application/json"}, cost=100, used=80)
    assert rates(pacer)[1] is None
    await pacer.acquire(100)
    headers = {
        "anthropic-ratelimit-input-tokens-limit": "10000",
        "anthropic-ratelimit-input-tokens-remaining": "9000",
        "anthropic-ratelimit-output-tokens-limit": "1000",
        "anthropic-ratelimit-output-tokens-remaining": "200",
        "anthropic-ratelimit-output-tokens-reset": "8s",
    }
    release(pacer, headers=headers, cost=100, used=100)
    assert rates(pacer)[1] == pytest.approx(100.0)
    assert await acquired_now(pacer, 150)
    assert not await acquired_now(pacer, 100)
    assert rates(pacer)[0] is None


async def test_a_limit_despite_room_in_the_headers_caps_bursts_and_teaches_a_pace() -> None:
    """When a limit shows in 429s although the headers show room, the headers may no
    longer raise our count, their burst is capped to a second's worth, and a pace is set."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=1000, clock=clock, probe_s=0)
    roomy = {
        "x-ratelimit-limit-requests": "6000",
        "x-ratelimit-remaining-requests": "5000",
        "x-ratelimit-reset-requests": "10s",  # 1000 used, full in 10 s: 100/s
    }
    await pacer.acquire(0)
    release(pacer, headers=roomy)
    assert rates(pacer)[0] == pytest.approx(100.0)
    for _ in range(8):  # eight in a row: a limit
        clock.now += 0.001
        await pacer.acquire(0)
        release(pacer, 429, headers=roomy, retry_after=0)
    assert pacer.slowed is not None
    assert pacer.slowed.startswith("HTTP 429: the last 8 answers refused: pace")
    mirror = pacer._budgets.requests_seen.bucket
    assert mirror is not None and mirror.capacity == 100  # a second's worth, not 6000
    level = mirror.level
    release(pacer, headers=roomy)
    assert mirror.level <= level + 1  # "5000 remaining" is no longer taken at its word
    assert pacer.pace is not None and pacer.pace < 100


async def test_flags_win_over_headers() -> None:
    """With --rpm and --tpm set, headers do not change the budgets."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=8, rpm=120, tpm=1200, clock=clock)
    await pacer.acquire(10)
    headers = {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "100000",
        "x-ratelimit-remaining-tokens": "10",
        "x-ratelimit-reset-tokens": "1s",
    }
    release(pacer, headers=headers, cost=10, used=10)
    assert rates(pacer) == (2.0, 20.0)


async def test_waiters_do_not_busy_loop() -> None:
    """256 workers held by a cool-down cost a few checks each, not a spin."""
    pacer = Pacer(ramp=False, concurrency=512, probe_s=0)  # the 429 below cuts the limit to 256
    checks = 0
    real_wait_s = pacer._wait_s

    def counting_wait_s(now: float, cost: int, *, waited: float) -> tuple[float, str]:
        nonlocal checks
        checks += 1
        return real_wait_s(now, cost, waited=waited)

    pacer._wait_s = counting_wait_s  # type: ignore[method-assign]
    release(pacer, 429, retry_after=0.2)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(256):
                tg.start_soon(pacer.acquire, 0)
    assert pacer.in_flight == 256
    assert checks < 3 * 256


def test_bad_settings_are_refused() -> None:
    """Nonsense settings fail at construction, naming the setting."""
    with pytest.raises(ValueError, match="concurrency"):
        Pacer(ramp=False, concurrency=0)
    with pytest.raises(ValueError, match="min_limit"):
        Pacer(ramp=False, concurrency=2, min_limit=3)
    with pytest.raises(ValueError, match="rpm"):
        Pacer(ramp=False, concurrency=2, rpm=-1)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_wait_s"):
            Pacer(ramp=False, concurrency=2, max_wait_s=bad)


class SimServer:
    """A server with a token bucket (`rate`/s, `capacity` at once) that answers 429 beyond it."""

    def __init__(self, *, rate: float, capacity: int, family: str) -> None:
        self.rate = rate
        self.capacity = capacity
        self.family = family
        self.level = float(capacity)
        self.stamp = time.monotonic()
        self.ok = 0
        self.refused = 0

    def hit(self) -> tuple[int, dict[str, str]]:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1:
            self.level -= 1
            self.ok += 1
            status = 200
        else:
            self.refused += 1
            status = 429
        full_in = (self.capacity - self.level) / self.rate
        if self.family == "openai":
            headers = {
                "x-ratelimit-limit-requests": str(self.capacity),
                "x-ratelimit-remaining-requests": str(int(self.level)),
                "x-ratelimit-reset-requests": f"{round(full_in * 1000)}ms",
            }
        else:
            reset = datetime.fromtimestamp(time.time() + full_in, tz=UTC)
            headers = {
                "anthropic-ratelimit-requests-limit": str(self.capacity),
                "anthropic-ratelimit-requests-remaining": str(int(self.level)),
                "anthropic-ratelimit-requests-reset": reset.isoformat(timespec="milliseconds"),
            }
        if status == 429:
            headers["retry-after-ms"] = f"{(1 - self.level) / self.rate * 1000:.1f}"
        return status, headers


@pytest.mark.parametrize("family", ["openai", "anthropic"])
async def test_learned_pacing_fills_the_server_limit_with_few_429s(family: str) -> None:
    """256 workers and no --rpm against a 200/s server: >= 85% of its capacity, <= 5% 429s."""
    rate, capacity, seconds, latency = 200.0, 50, 1.2, 0.01
    server = SimServer(rate=rate, capacity=capacity, family=family)
    pacer = Pacer(ramp=False, concurrency=256)

    async def worker() -> None:
        while True:
            await pacer.acquire(0)
            status: int | None = None
            headers: dict[str, str] = {}
            try:
                await anyio.sleep(latency / 2)
                status, headers = server.hit()
                await anyio.sleep(latency / 2)
            finally:
                retry_after = parse_retry_after(headers, now=time.time())
                release(pacer, status, headers=headers, retry_after=retry_after)

    started = time.monotonic()
    server.stamp = started
    with anyio.move_on_after(seconds):
        async with anyio.create_task_group() as tg:
            for _ in range(256):
                tg.start_soon(worker)
    most = capacity + rate * (time.monotonic() - started)
    share_used = server.ok / most
    share_refused = server.refused / (server.ok + server.refused)
    figures = f"ok={server.ok} refused={server.refused} of at most {most:.0f}"
    assert share_used >= 0.85, figures
    assert share_refused <= 0.05, figures
    assert rates(pacer)[0] == pytest.approx(rate, rel=0.3)


# --- the wait cap, giving up, and closing ----------------------------------------------------

SPENT_FOR_1000H = {
    "x-ratelimit-limit-requests": "1",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1000h",
}


async def test_a_learned_budget_holds_the_head_for_at_most_max_wait() -> None:
    """Headers saying "0 of 1 left, full in 1000 h" hold each attempt max_wait_s, not 60 s."""
    pacer = Pacer(ramp=False, concurrency=2, probe_s=0, max_wait_s=0.3)
    pacer.learn(SPENT_FOR_1000H)
    with anyio.fail_after(10):  # without the cap: a minute per attempt (the floor rate)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pacer.acquire, 0)
            await anyio.sleep(0.1)
            waiting = pacer.waiting()
            assert waiting is not None and "request budget" in waiting, waiting
            assert "at most 0.3 s" in waiting
        release(pacer, headers=SPENT_FOR_1000H)
        await pacer.acquire(0)
    assert pacer.in_flight == 1


async def test_over_cap_asks_from_two_waves_give_up_and_close_the_pacer() -> None:
    """A Retry-After of 10^9 binds its row (the retry policy caps it), pauses no one; the
    next wave's gives up the run."""
    clock = FakeClock()
    reasons: list[str] = []
    pacer = Pacer(ramp=False, concurrency=4, clock=clock, probe_s=0, on_give_up=reasons.append)
    forever = {"retry-after": "1000000000"}
    await pacer.acquire(0)
    await pacer.acquire(0)
    release(pacer, 429, headers=forever, retry_after=1e9)
    release(pacer, 429, headers=forever, retry_after=1e9)  # same wave: no second count
    assert pacer._cooldown_until == -math.inf and pacer.waiting() is None
    assert reasons == [] and not pacer.seats.closed
    clock.now += MAX_WAIT_S
    await pacer.acquire(0)
    release(pacer, 429, headers=forever, retry_after=1e9)
    assert len(reasons) == 1 and pacer.seats.closed
    assert "twice in a row" in reasons[0] and "retry-after: 1000000000" in reasons[0]
    with pytest.raises(AdmissionClosedError):
        await pacer.acquire(0)


async def test_a_limit_asking_beyond_the_cap_pauses_everyone_for_the_cap() -> None:
    """A spent budget's 429 asking for 10^9 s pauses everyone max_wait_s, and says so."""
    clock = FakeClock()
    pacer = Pacer(ramp=False, concurrency=4, clock=clock, probe_s=0)
    await pacer.acquire(0)
    release(pacer, 429, headers={**SPENT, "retry-after": "1000000000"}, retry_after=1e9)
    assert pacer._cooldown_until == clock.now + MAX_WAIT_S
    waiting = pacer.waiting()
    assert waiting == "60 s for HTTP 429 retry-after: 1000000000 (capped at 60 s)", waiting


async def test_a_spent_budget_at_the_preflight_is_the_first_ask() -> None:
    """learn() counts a budget spent beyond the cap; the first attempt's answer gives up."""
    reasons: list[str] = []
    pacer = Pacer(ramp=False, concurrency=1, max_wait_s=0.2, on_give_up=reasons.append)
    assert pacer.learn(SPENT_FOR_1000H)
    with anyio.fail_after(10):
        await pacer.acquire(0)  # held by the learned budget for the cap
    assert reasons == []
    release(pacer, 200, headers=SPENT_FOR_1000H)
    assert len(reasons) == 1
    assert "x-ratelimit-reset-requests: 1000h" in reasons[0] and "0.2 s cap" in reasons[0]


async def test_close_cancels_rows_waiting_now_and_rows_on_the_wire_when_they_end() -> None:
    """close(): a row waiting for a slot is cancelled at once; the row on the wire is not,
    but its retry backoff after release is."""
    pacer = Pacer(ramp=False, concurrency=1, probe_s=0)
    answered = anyio.Event()
    events: list[str] = []

    async def on_the_wire() -> None:
        with anyio.CancelScope() as scope, pacer.seats.seat(scope, "row"):
            await pacer.acquire(0)
            await answered.wait()
            events.append("answered")
            release(pacer, 503)
            await anyio.sleep(3600)  # the retry backoff
        events.append("wire row stopped" if scope.cancelled_caught else "wire row slept")

    async def waiting() -> None:
        with anyio.CancelScope() as scope, pacer.seats.seat(scope, "row"):
            await pacer.acquire(0)  # the only slot is taken
        events.append("waiting row cancelled" if scope.cancelled_caught else "admitted")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(on_the_wire)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(waiting)
            await anyio.wait_all_tasks_blocked()
            pacer.close()
            await anyio.wait_all_tasks_blocked()
            assert events == ["waiting row cancelled"]
            answered.set()
    assert events == ["waiting row cancelled", "answered", "wire row stopped"]
    assert pacer.in_flight == 0


def test_the_first_wave_leaves_over_about_150_ms() -> None:
    """64 requests: the first at once, the last ~145 ms later, the spacing shrinking; after
    the first second the ramp no longer binds."""
    ramp = Ramp(64)
    now, times = 0.0, []
    for _ in range(64):
        now += ramp.delay(now)
        times.append(now)
        ramp.take(now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times[0] == 0.0 and 0.13 < times[-1] < 0.16, times[-1]
    assert gaps[0] > gaps[-1] > 0
    assert ramp.delay(1.01) == 0.0


async def test_a_real_first_wave_is_spread_by_the_ramp() -> None:
    """With the ramp on, 64 attempts admitted at once take ~0.15 s to leave; a second
    wave right after leaves at once."""
    pacer = Pacer(concurrency=128, probe_s=0)
    started = time.monotonic()
    for _ in range(64):
        await pacer.acquire(0)
    assert time.monotonic() - started >= 0.05
    await anyio.sleep(1.1)
    later = time.monotonic()
    for _ in range(64):
        await pacer.acquire(0)
    assert time.monotonic() - later < 0.05
