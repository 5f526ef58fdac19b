"""Server-side rate limits and the headers that describe them, in three ways servers do it.

`bucket` (default): token buckets per second and per minute with honest headers of both
conventions (Anthropic resets are RFC 3339 instants, OpenAI's Go durations). `sliding`: at
most N requests in any one-second span, announced as N*60 per minute, with a gateway's
headers (successes carry no limit and a per-minute `remaining` that says nothing about the
second that binds). `fixed`: N requests per fixed window, with a limit and what is left but
no reset, and the refusal's wait as LiteLLM spells it (`llm_provider-retry-after`).
Admits or refuses generation requests and writes headers; it never sleeps and never writes
responses. Without configured limits the buckets are huge and never refuse.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from batchrunner.fakeapi.options import FakeOptions

UNLIMITED_RPM = 1_000_000
TOKENS_PER_MINUTE = 100_000_000


class Bucket:
    """A token bucket: `capacity` tokens, refilled at `per_second`."""

    __slots__ = ("capacity", "per_second", "stamp", "tokens")

    def __init__(self, capacity: float, per_second: float, now: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.tokens = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        """Add what accrued since the last call."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` tokens are available (0 when they already are)."""
        return max(0.0, (amount - self.tokens) / self.per_second)

    def reset_after(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.tokens) / self.per_second)


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration: `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`."""
    millis = math.ceil(seconds * 1000)
    if millis <= 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rfc3339(instant: float) -> str:
    """UTC RFC 3339 timestamp, rounded up to the whole second (a reset is never early)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(instant)))


def retry_headers(seconds: float, *, style: str = "both") -> dict[str, str]:
    """Retry headers for `seconds`: integer `retry-after`, plus `retry-after-ms` if fractional.

    style "ms" sends only `retry-after-ms`; "date" sends `retry-after` as an HTTP-date.
    """
    millis = str(math.ceil(seconds * 1000))
    if style == "ms":
        return {"retry-after-ms": millis}
    if style == "date":
        return {
            "retry-after": email.utils.formatdate(math.ceil(time.time() + seconds), usegmt=True)
        }
    headers = {"retry-after": str(math.ceil(seconds))}
    if seconds != math.ceil(seconds):
        headers["retry-after-ms"] = millis
    return headers


class _Limiter(Protocol):
    def admit(self, now: float) -> float | None: ...

    def headers(self, now: float, *, refused: bool) -> dict[str, str]: ...

    def refusal(self, wait: float) -> tuple[dict[str, str], float]: ...


class _Buckets:
    """Token buckets (per second and per minute, when set) and honest headers of both kinds."""

    def __init__(self, options: FakeOptions, now: float) -> None:
        rps, rpm = options.rate_limit_rps, options.rate_limit_rpm
        self.requests: list[Bucket] = []
        if rps:
            self.requests.append(Bucket(max(1.0, rps), rps, now))
        if rpm:
            self.requests.append(Bucket(max(1.0, rpm), rpm / 60, now))
        self.reported = Bucket(UNLIMITED_RPM, UNLIMITED_RPM / 60, now)
        self.tokens = Bucket(TOKENS_PER_MINUTE, TOKENS_PER_MINUTE / 60, now)

    def _buckets(self) -> list[Bucket]:
        return self.requests or [self.reported]

    def admit(self, now: float) -> float | None:
        buckets = self._buckets()
        for bucket in buckets:
            bucket.refill(now)
        wait = max(bucket.wait_for(1.0) for bucket in buckets)
        if wait > 0 and self.requests:
            return wait
        for bucket in buckets:
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
        return None

    def headers(self, now: float, *, refused: bool) -> dict[str, str]:
        """Both families, from the most depleted request bucket and the token bucket."""
        wall = time.time()
        requests = self._buckets()
        for bucket in requests:
            bucket.refill(now)
        self.tokens.refill(now)
        request = min(requests, key=lambda bucket: bucket.tokens / bucket.capacity)
        headers: dict[str, str] = {}
        for name, bucket in (("requests", request), ("tokens", self.tokens)):
            limit = str(int(bucket.capacity))
            remaining = str(int(bucket.tokens))
            reset_after = bucket.reset_after()
            headers[f"anthropic-ratelimit-{name}-limit"] = limit
            headers[f"anthropic-ratelimit-{name}-remaining"] = remaining
            headers[f"anthropic-ratelimit-{name}-reset"] = rfc3339(wall + reset_after)
            headers[f"x-ratelimit-limit-{name}"] = limit
            headers[f"x-ratelimit-remaining-{name}"] = remaining
            headers[f"x-ratelimit-reset-{name}"] = go_duration(reset_after)
        return headers

    def refusal(self, wait: float) -> tuple[dict[str, str], float]:
        return retry_headers(wait), wait


class _Sliding:
    """At most `limit` requests admitted in any one-second span, announced per minute."""

    def __init__(self, options: FakeOptions) -> None:
        self.limit = int(options.rate_limit_rps)
        self.second: deque[float] = deque()  # admissions of the last second
        self.minute: deque[float] = deque()  # and of the last minute, for `remaining`

    def _forget(self, now: float) -> None:
        while self.second and self.second[0] <= now - 1.0:
            self.second.popleft()
        while self.minute and self.minute[0] <= now - 60.0:
            self.minute.popleft()

    def admit(self, now: float) -> float | None:
        self._forget(now)
        if len(self.second) >= self.limit:
            return max(1e-3, self.second[0] + 1.0 - now)
        self.second.append(now)
        self.minute.append(now)
        return None

    def headers(self, now: float, *, refused: bool) -> dict[str, str]:
        # What is left of the announced minute: true of the minute, misleading about the
        # second that binds (a gateway's count). Only refusals name the limit.
        self._forget(now)
        headers = {"x-ratelimit-remaining-requests": str(60 * self.limit - len(self.minute))}
        if refused:
            headers["x-ratelimit-limit-requests"] = str(60 * self.limit)
        return headers

    def refusal(self, wait: float) -> tuple[dict[str, str], float]:
        seconds = max(1, math.ceil(wait))  # gateways round up to whole seconds
        return {"retry-after": str(seconds)}, float(seconds)


class _Fixed:
    """At most `limit` requests per window of `window_s`, counted from the server's start."""

    def __init__(self, options: FakeOptions, now: float) -> None:
        self.limit = int(options.rate_limit_rpm)
        self.window_s = options.rate_limit_window
        self.start = now
        self.index = 0
        self.count = 0

    def _roll(self, now: float) -> None:
        index = math.floor((now - self.start) / self.window_s)
        if index != self.index:
            self.index, self.count = index, 0

    def admit(self, now: float) -> float | None:
        self._roll(now)
        if self.count >= self.limit:
            return max(1e-3, self.start + (self.index + 1) * self.window_s - now)
        self.count += 1
        return None

    def headers(self, now: float, *, refused: bool) -> dict[str, str]:
        self._roll(now)
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.limit - self.count),
        }

    def refusal(self, wait: float) -> tuple[dict[str, str], float]:
        # LiteLLM forwards the wait under its own prefix only; no standard Retry-After.
        seconds = max(1, math.ceil(wait))
        return {"llm_provider-retry-after": str(seconds)}, float(seconds)


class RateLimits:
    """The server's request limit in the configured mode, and a token count for headers."""

    def __init__(
        self, options: FakeOptions, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._options = options
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Start every limit afresh (used by `POST /_fake/reset`)."""
        now = self._clock()
        mode = self._options.rate_limit_mode
        self._buckets = _Buckets(self._options, now)
        self._limiter: _Limiter = self._buckets
        if mode == "sliding":
            self._limiter = _Sliding(self._options)
        elif mode == "fixed":
            self._limiter = _Fixed(self._options, now)

    def admit(self) -> float | None:
        """Take one request; None when admitted, else the seconds until one would be."""
        return self._limiter.admit(self._clock())

    def spend_tokens(self, count: int) -> None:
        """Record tokens an answer used (reported in `bucket` headers, never enforced)."""
        tokens = self._buckets.tokens
        tokens.refill(self._clock())
        tokens.tokens = max(0.0, tokens.tokens - count)

    def headers(self, *, refused: bool = False) -> dict[str, str]:
        """The rate-limit headers of a response (`refused`: a 429's); none when switched off."""
        if not self._options.rate_limit_headers:
            return {}
        return self._limiter.headers(self._clock(), refused=refused)

    def refusal(self, wait: float) -> tuple[dict[str, str], float]:
        """The retry headers of a refusal that must wait `wait` s, and the seconds they say."""
        return self._limiter.refusal(wait)
