"""The pacer's arithmetic: token buckets (a plain one for --rpm/--tpm, a mirror of a
server's) and the AIMD in-flight limit.

Pure arithmetic on times the caller passes in: no waiting, no IO, no anyio. `pacing`
decides what to do with the delays and limits these compute.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchrunner.ratelimits import LimitState

_BURST_S = 1.0  # flag budgets may burst one second's worth (servers enforce about per second)
_ASSUMED_WINDOW_S = 60.0  # limits are per minute until deficits in the headers say otherwise
_KEEP = 0.9  # decay of the rate samples: about the last ten responses count
_DISTRUST_S = 60.0  # after a 429 the server's "remaining" may lower our count, not raise it
_CUT_WINDOW_S = 1.0  # between two cuts when an attempt's dispatch time is unknown


class Bucket:
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


class Mirror:
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
        self.bucket: Bucket | None = None
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
            self.bucket = Bucket(rate=rate, capacity=capacity, level=level, now=now)
            return
        if now < self._distrust_until:
            self.bucket.refill(now)
            level = min(level, self.bucket.level)
        self.bucket.rate, self.bucket.capacity = rate, capacity
        self.bucket.level, self.bucket.stamp = level, now


def flag_bucket(rate: float, now: float) -> Bucket:
    capacity = max(1.0, rate * _BURST_S)
    return Bucket(rate=rate, capacity=capacity, level=capacity, now=now)


class Aimd:
    """The adaptive in-flight limit: halve on a 429/529 wave, grow back one per window.

    It starts at `concurrency`, halves down to `min_limit` (once per wave: a 429 for an
    attempt sent before the last cut does not cut again), and grows by one per `limit`
    successes back up to `concurrency`.
    """

    def __init__(self, *, concurrency: int, min_limit: int) -> None:
        self.concurrency = concurrency
        self.min_limit = min_limit
        self.limit = concurrency
        self._grown = 0  # successes since the limit last changed
        self._last_cut_at = -math.inf

    def cut(self, now: float, sent_at: float | None) -> bool:
        """Halve the limit, unless the attempt (sent at `sent_at`) left before the last cut."""
        if sent_at is not None:
            same_wave = sent_at < self._last_cut_at
        else:
            same_wave = now - self._last_cut_at < _CUT_WINDOW_S
        if same_wave:
            return False
        self.limit = max(self.min_limit, self.limit // 2)
        self._last_cut_at = now
        self._grown = 0
        return True

    def grow(self) -> None:
        if self.limit >= self.concurrency:
            return
        self._grown += 1
        if self._grown >= self.limit:
            self.limit += 1
            self._grown = 0


# A learned pace bursts 50 ms' worth: at 90% of a one-second window's rate, that burst still
# fits in the window.
_PACE_BURST_S = 0.05


class Budgets:
    """What an attempt must fit besides a slot: request and token budgets from the user's
    flags or mirrored from the server's headers, and the pace learned from refusals."""

    def __init__(self, *, rpm: float, tpm: float, now: float, ramp: int | None) -> None:
        self.ramp = Ramp(ramp) if ramp else None  # the first wave of `ramp` requests
        self.requests_flag = flag_bucket(rpm / 60.0, now) if rpm > 0 else None
        self.tokens_flag = flag_bucket(tpm / 60.0, now) if tpm > 0 else None
        self.requests_seen = Mirror()
        self.tokens_seen = Mirror()
        self.paced: Bucket | None = None

    def requests(self) -> Bucket | None:
        # Flags win over what the headers say: the user may be sharing the key on purpose.
        return self.requests_flag if self.requests_flag is not None else self.requests_seen.bucket

    def tokens(self) -> Bucket | None:
        return self.tokens_flag if self.tokens_flag is not None else self.tokens_seen.bucket

    @property
    def pace(self) -> float | None:
        """The tightest request pace (a flag, the headers' or the learned one), if any."""
        rates = [bucket.rate for bucket in (self.requests(), self.paced) if bucket is not None]
        return min(rates) if rates else None

    def delay(self, now: float, cost: int, *, learned_left: float) -> tuple[float, str]:
        """The longest wait a budget imposes on an attempt of `cost` tokens, and its kind
        ("rpm", "requests", "tpm", "tokens", "pace", "ramp"; "" for none). What was learned
        holds for at most `learned_left`; the user's flags hold fully."""
        # Written out, not looped over a table of buckets: it runs for every attempt.
        wait, why = 0.0, ""
        if self.requests_flag is not None:
            wait, why = self.requests_flag.delay(now, 1), "rpm"
        elif (seen := self.requests_seen.bucket) is not None:
            wait, why = min(seen.delay(now, 1), learned_left), "requests"
        if cost > 0:
            if self.tokens_flag is not None:
                delay, kind = self.tokens_flag.delay(now, cost), "tpm"
            elif (seen := self.tokens_seen.bucket) is not None:
                delay, kind = min(seen.delay(now, cost), learned_left), "tokens"
            else:
                delay, kind = 0.0, ""
            if delay > wait:
                wait, why = delay, kind
        if self.paced is not None:
            delay = min(self.paced.delay(now, 1), learned_left)
            if delay > wait:
                wait, why = delay, "pace"
        if self.ramp is not None:
            ramp = self.ramp.delay(now)
            if ramp > wait:
                return ramp, "ramp"
            if self.ramp.over(now):
                self.ramp = None  # it no longer binds: every attempt after skips it
        return wait, why

    def take(self, now: float, cost: int) -> None:
        if self.ramp is not None:
            self.ramp.take(now)
        requests, tokens = self.requests(), self.tokens()
        if requests is not None:
            requests.take(now, 1)
        if tokens is not None and cost > 0:
            tokens.take(now, cost)
        if self.paced is not None:
            self.paced.take(now, 1)

    def refund(self, now: float, amount: float) -> None:
        """Settle a reservation with the usage the response reports (negative: charge)."""
        for bucket in (self.tokens_flag, self.tokens_seen.bucket):
            if bucket is not None:
                bucket.give(now, amount)

    def distrust(self, now: float) -> None:
        """The headers showed room, yet the server refused: see `Mirror.refused`."""
        self.requests_seen.refused(now, new_wave=True)
        self.tokens_seen.refused(now, new_wave=True)

    def set_pace(self, now: float, rate: float) -> None:
        """Pace requests to `rate` per second from now on."""
        capacity = max(1.0, rate * _PACE_BURST_S)
        if self.paced is None:
            self.paced = Bucket(rate=rate, capacity=capacity, level=0.0, now=now)
            return
        self.paced.refill(now)
        self.paced.rate, self.paced.capacity = rate, capacity
        self.paced.level = min(self.paced.level, capacity)


class Ramp:
    """The first wave leaves over ~150 ms instead of all at once.

    Starting at `4 * concurrency` requests/s and doubling every 0.1 s, it lets a limit that
    the first wave would overrun show in refusals (which come back within a round trip)
    before most of the wave is out. It binds only at the start, and on a 1 s round trip
    costs ~0.07 s once (64 requests leave by 0.145 s, 512 by the same: their dispatch
    alone takes longer).
    """

    DOUBLE_S = 0.1

    def __init__(self, concurrency: int) -> None:
        self.rate = 4.0 * concurrency
        self.start: float | None = None  # the first dispatch
        self.sent = 0

    def over(self, now: float) -> bool:
        """Whether it no longer binds: 1 s after the first dispatch it allows 1 000 times
        the first rate."""
        return self.start is not None and now - self.start > 10 * self.DOUBLE_S

    def delay(self, now: float) -> float:
        """Seconds until one more request may leave (0.0 when it may now)."""
        if self.start is None or self.over(now):
            return 0.0
        # Allowed by t: rate * D / ln 2 * (2^(t/D) - 1); solved for the next one's time.
        scale = self.rate * self.DOUBLE_S / math.log(2)
        due = self.start + self.DOUBLE_S * math.log2(1 + self.sent / scale)
        return max(0.0, due - now)

    def take(self, now: float) -> None:
        if self.start is None:
            self.start = now
        self.sent += 1
