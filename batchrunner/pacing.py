"""Pace every HTTP attempt: shared cool-down, adaptive in-flight limit, request and token budgets.

One Pacer per run: `await acquire(cost)` before each attempt, `release(...)` after it, always.
Waiters queue FIFO and only the head watches the clock, so hundreds cost one timer, not a
spin. It sends and retries nothing (that is `client`'s job) and uses anyio only.
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from batchrunner.ratelimits import LimitState, parse_rate_limit_headers, parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

MAX_COOLDOWN_S = 300.0  # a shared pause longer than this is a server bug, not advice
DEFAULT_COOLDOWN_S = 1.0  # a 429/529 that names no wait still pauses everyone briefly
_BURST_S = 1.0  # flag budgets may burst one second's worth (servers enforce about per second)
_ASSUMED_WINDOW_S = 60.0  # limits are per minute until deficits in the headers say otherwise
_CUT_WINDOW_S = 1.0  # between two cuts when an attempt's dispatch time is unknown
_KEEP = 0.9  # decay of the rate samples: about the last ten responses count
_DISTRUST_S = 60.0  # after a 429 the server's "remaining" may lower our count, not raise it
_EPS = 1e-9


class _Bucket:
    """A token bucket that may go into debt, so an oversize take waits for a full bucket.

    Debt keeps the long-run rate right for a request that costs more than the capacity,
    instead of letting it wait forever.
    """

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, *, rate: float, capacity: float, level: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = level
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def delay(self, now: float, amount: float) -> float:
        """Seconds until `amount` may be taken (0.0 when it may be taken now)."""
        self.refill(now)
        need = min(amount, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate if self.rate > 0 else math.inf

    def take(self, now: float, amount: float) -> None:
        self.refill(now)
        self.level -= amount

    def give(self, now: float, amount: float) -> None:
        """Return `amount` (negative: charge more), never above capacity."""
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)


class _Mirror:
    """Our copy of one server-side bucket, re-synced from every response's headers.

    The refill rate is the ratio of decayed sums of (limit - remaining) over reset: for a
    bucket refilled continuously (both official APIs say theirs are) that is exactly its
    rate, and the ratio weights long, precise resets above short, rounded ones.

    A 429 although the mirror had room means the server enforces a shorter window than
    its headers admit (Anthropic: "60 RPM may be enforced as 1 request per second"), so
    the burst is capped at one second's worth, then halved on each further wave of 429s,
    and for a while the headers may only lower our count.
    """

    def __init__(self) -> None:
        self.bucket: _Bucket | None = None
        self._used = 0.0
        self._seconds = 0.0
        self._burst: float | None = None  # cap on the capacity, once a 429 proved it needed
        self._distrust_until = -math.inf

    def refused(self, now: float, *, new_wave: bool) -> None:
        """The server answered 429: it has no room now, whatever our copy says."""
        bucket = self.bucket
        if bucket is None:
            return
        bucket.take(now, max(0.0, bucket.level))
        self._distrust_until = now + _DISTRUST_S
        if new_wave:
            self._burst = max(
                1.0, bucket.rate * _BURST_S if self._burst is None else self._burst / 2
            )
            bucket.capacity = min(bucket.capacity, self._burst)

    def _capacity(self, limit: float) -> float:
        return limit if self._burst is None else min(limit, self._burst)

    def sync(self, state: LimitState, *, uncounted: float, now: float) -> None:
        limit, remaining, reset = state.limit, state.remaining, state.reset_in_s
        if limit is None or remaining is None or limit <= 0:
            return
        if reset is not None and reset > 0 and limit - remaining >= 1:
            self._used = _KEEP * self._used + (limit - remaining)
            self._seconds = _KEEP * self._seconds + reset
        # Both APIs state limits per minute at the longest, so the bucket refills at least at
        # limit/60 per second; rounded resets can only make the estimate too low.
        floor = limit / _ASSUMED_WINDOW_S
        rate = max(floor, self._used / self._seconds) if self._seconds > 0 else floor
        capacity = self._capacity(limit)
        level = max(-limit, min(capacity, remaining - uncounted))
        if self.bucket is None:
            self.bucket = _Bucket(rate=rate, capacity=capacity, level=level, now=now)
            return
        if now < self._distrust_until:
            self.bucket.refill(now)
            level = min(level, self.bucket.level)
        self.bucket.rate, self.bucket.capacity = rate, capacity
        self.bucket.level, self.bucket.stamp = level, now


@dataclass(frozen=True, slots=True)
class _Ticket:
    """What `acquire` remembers for the matching `release` of the same task."""

    owner: object
    seq: int  # attempts dispatched by this pacer, this one included
    at: float  # dispatch time on the pacer's clock
    reserved: int  # tokens reserved by this pacer, this attempt included


# The worker task that acquired is the one that releases, so a context variable pairs them
# without widening the API; a release without a ticket falls back to coarser estimates.
_TICKET: ContextVar[_Ticket | None] = ContextVar("batchrunner_pacer_ticket", default=None)


def _token_state(states: dict[str, LimitState]) -> LimitState | None:
    """The token limit to pace by: the combined one, else the tighter of input and output."""
    combined = states.get("tokens")
    if combined is not None and combined.limit is not None and combined.remaining is not None:
        return combined
    split = [
        s
        for s in (states.get("input-tokens"), states.get("output-tokens"))
        if s is not None and s.limit is not None and s.remaining is not None
    ]
    return min(split, key=lambda s: s.remaining or 0.0) if split else None


class Pacer:
    """Admission control for HTTP attempts, shared by every worker of a run.

    `acquire` waits until no shared cool-down is active, an in-flight slot is free under
    the adaptive limit, and the request and token budgets allow the attempt. Budgets come
    from `rpm`/`tpm` when > 0, else from the rate-limit headers `release` sees. With no
    budget given, the first attempt goes alone (a probe, for at most `probe_s` seconds) so
    its headers arrive before a full wave can overrun the server.

    The in-flight limit is AIMD: it starts at `concurrency`, halves on a 429/529 (once per
    wave: a 429 for an attempt sent before the last cut does not cut again) down to
    `min_limit`, and grows by one per `limit` successes back up to `concurrency`.
    """

    def __init__(
        self,
        *,
        concurrency: int,
        rpm: float = 0,
        tpm: float = 0,
        clock: Callable[[], float] = time.monotonic,
        min_limit: int = 1,
        wall_clock: Callable[[], float] = time.time,
        probe_s: float = 2.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if not 1 <= min_limit <= concurrency:
            raise ValueError(f"min_limit must be between 1 and {concurrency}, not {min_limit}")
        for name, value in (("rpm", rpm), ("tpm", tpm), ("probe_s", probe_s)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value}")
        self._concurrency = concurrency
        self._min_limit = min_limit
        self._clock = clock
        self._wall = wall_clock
        now = clock()
        self._requests_flag = _flag_bucket(rpm / 60.0, now) if rpm > 0 else None
        self._tokens_flag = _flag_bucket(tpm / 60.0, now) if tpm > 0 else None
        self._requests_seen = _Mirror()
        self._tokens_seen = _Mirror()
        self._limit = concurrency
        self._in_flight = 0
        self._grown = 0  # successes since the limit last changed
        self._last_cut_at = -math.inf
        self._cooldown_until = -math.inf
        self._probe_s = probe_s
        self._probing = rpm == 0 and tpm == 0 and probe_s > 0
        self._probe_ends = math.inf  # set when the probe leaves
        self._seq = 0
        self._reserved = 0  # tokens reserved since the start, for counting later dispatches
        self._reserved_in_flight = 0
        self._gate = anyio.Lock()
        self._changed = anyio.Event()

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def limit(self) -> int:
        """The adaptive in-flight limit (AIMD), between `min_limit` and `concurrency`."""
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def cooldown_until(self) -> float:
        """End of the shared cool-down on the pacer's clock (-inf when there has been none)."""
        return self._cooldown_until

    @property
    def learned_rps(self) -> float | None:
        """Requests per second being paced to (flag or learned), None when unlimited."""
        bucket = self._requests_bucket()
        return bucket.rate if bucket is not None else None

    @property
    def learned_tps(self) -> float | None:
        """Tokens per second being paced to (flag or learned), None when unlimited."""
        bucket = self._tokens_bucket()
        return bucket.rate if bucket is not None else None

    async def acquire(self, cost_tokens: int) -> None:
        """Wait until an attempt reserving `cost_tokens` may be sent, then count it in flight.

        Cancellable at any point: nothing is taken until the moment it returns.
        """
        cost = max(0, int(cost_tokens))
        async with self._gate:
            while True:
                now = self._clock()
                wait = self._wait_s(now, cost)
                if wait <= _EPS:
                    self._commit(now, cost)
                    return
                changed = self._changed
                with anyio.move_on_after(wait):
                    await changed.wait()

    def release(
        self,
        *,
        status: int | None,
        headers: Mapping[str, str],
        retry_after: float | None,
        cost_tokens: int,
        used_tokens: int | None,
    ) -> None:
        """End an attempt: free its slot, settle its tokens, learn from its response.

        Args:
            status: the HTTP status, or None when no response came.
            retry_after: the server's wait in seconds, if the caller parsed one; else
                it is read from `headers`.
            used_tokens: the tokens the response reports using, to refund the reservation.
        """
        now = self._clock()
        ticket = _TICKET.get()
        if ticket is not None and ticket.owner is not self:
            ticket = None
        _TICKET.set(None)
        cost = max(0, cost_tokens)
        self._in_flight = max(0, self._in_flight - 1)
        self._reserved_in_flight = max(0, self._reserved_in_flight - cost)
        self._probing = False
        if used_tokens is not None:
            refund = cost - used_tokens
            for bucket in (self._tokens_flag, self._tokens_seen.bucket):
                if bucket is not None:
                    bucket.give(now, refund)
        if headers:
            self._learn(headers, now, ticket)
        if status in (429, 529):
            new_wave = self._cut(now, ticket)
            if status == 429:
                self._requests_seen.refused(now, new_wave=new_wave)
                self._tokens_seen.refused(now, new_wave=new_wave)
            wait = retry_after
            if wait is None:
                wait = parse_retry_after(headers, now=self._wall())
            if wait is None or not math.isfinite(wait) or wait < 0:
                wait = DEFAULT_COOLDOWN_S
            self._cooldown_until = max(self._cooldown_until, now + min(wait, MAX_COOLDOWN_S))
        elif status is not None and 200 <= status < 300:
            self._grow()
        self._notify()

    def learn(self, headers: Mapping[str, str]) -> bool:
        """Learn budgets from a response that was not an attempt (the run's preflight).

        Returns True when the headers carried rate limits; the probe is then unnecessary,
        so the first wave may go at once (it costs a whole round trip otherwise).
        """
        if not parse_rate_limit_headers(headers, now=self._wall()):
            return False
        self._learn(headers, self._clock(), None)
        self._probing = False
        self._notify()
        return True

    def _requests_bucket(self) -> _Bucket | None:
        # Flags win over what the headers say: the user may be sharing the key on purpose.
        return (
            self._requests_flag if self._requests_flag is not None else self._requests_seen.bucket
        )

    def _tokens_bucket(self) -> _Bucket | None:
        return self._tokens_flag if self._tokens_flag is not None else self._tokens_seen.bucket

    def _wait_s(self, now: float, cost: int) -> float:
        waits = [self._cooldown_until - now]
        limit = self._limit
        if self._probing and now >= self._probe_ends:
            self._probing = False
        if self._probing:
            limit = 1
        if self._in_flight >= limit:
            # A freed slot wakes us; a probe that never answers frees the others in time.
            waits.append(self._probe_ends - now if self._probing else math.inf)
        requests = self._requests_bucket()
        if requests is not None:
            waits.append(requests.delay(now, 1))
        tokens = self._tokens_bucket()
        if tokens is not None and cost > 0:
            waits.append(tokens.delay(now, cost))
        return max(waits)

    def _commit(self, now: float, cost: int) -> None:
        self._in_flight += 1
        requests = self._requests_bucket()
        if requests is not None:
            requests.take(now, 1)
        tokens = self._tokens_bucket()
        if tokens is not None and cost > 0:
            tokens.take(now, cost)
        self._seq += 1
        self._reserved += cost
        self._reserved_in_flight += cost
        if self._probing and self._probe_ends == math.inf:
            self._probe_ends = now + self._probe_s
        _TICKET.set(_Ticket(owner=self, seq=self._seq, at=now, reserved=self._reserved))

    def _learn(self, headers: Mapping[str, str], now: float, ticket: _Ticket | None) -> None:
        states = parse_rate_limit_headers(headers, now=self._wall())
        # The server counted this attempt on arrival, but maybe not the ones still in flight
        # (sent earlier with a slower path) nor those sent after it: assume it counted none.
        requests = states.get("requests")
        if self._requests_flag is None and requests is not None:
            later = self._seq - ticket.seq if ticket is not None else 0
            self._requests_seen.sync(requests, uncounted=max(later, self._in_flight), now=now)
        tokens = _token_state(states)
        if self._tokens_flag is None and tokens is not None:
            later = self._reserved - ticket.reserved if ticket is not None else 0
            uncounted = max(later, self._reserved_in_flight)
            self._tokens_seen.sync(tokens, uncounted=uncounted, now=now)

    def _cut(self, now: float, ticket: _Ticket | None) -> bool:
        """Halve the limit, unless this attempt left before the last cut (same wave)."""
        if ticket is not None:
            same_wave = ticket.at < self._last_cut_at
        else:
            same_wave = now - self._last_cut_at < _CUT_WINDOW_S
        if same_wave:
            return False
        self._limit = max(self._min_limit, self._limit // 2)
        self._last_cut_at = now
        self._grown = 0
        return True

    def _grow(self) -> None:
        if self._limit >= self._concurrency:
            return
        self._grown += 1
        if self._grown >= self._limit:
            self._limit += 1
            self._grown = 0

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()


def _flag_bucket(rate: float, now: float) -> _Bucket:
    capacity = max(1.0, rate * _BURST_S)
    return _Bucket(rate=rate, capacity=capacity, level=capacity, now=now)
