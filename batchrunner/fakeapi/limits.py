"""Server-side rate limits (token buckets) and the rate-limit headers of both conventions.

Admits or refuses generation requests and describes the buckets in headers; it never
sleeps and never writes responses. Anthropic resets are RFC 3339 instants, OpenAI's Go
durations. Without configured limits the buckets are huge and never refuse.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

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


class RateLimits:
    """The request buckets (per second and per minute, when configured) and a token bucket."""

    def __init__(
        self, options: FakeOptions, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._options = options
        self._clock = clock
        self.reset()

    @property
    def enforced(self) -> bool:
        """Whether any request limit is configured."""
        return bool(self._options.rate_limit_rps or self._options.rate_limit_rpm)

    def reset(self) -> None:
        """Refill every bucket (used by `POST /_fake/reset`)."""
        now = self._clock()
        rps, rpm = self._options.rate_limit_rps, self._options.rate_limit_rpm
        self._requests: list[Bucket] = []
        if rps:
            self._requests.append(Bucket(max(1.0, rps), rps, now))
        if rpm:
            self._requests.append(Bucket(max(1.0, rpm), rpm / 60, now))
        self._reported = Bucket(UNLIMITED_RPM, UNLIMITED_RPM / 60, now)
        self._tokens = Bucket(TOKENS_PER_MINUTE, TOKENS_PER_MINUTE / 60, now)

    def _buckets(self) -> list[Bucket]:
        return self._requests or [self._reported]

    def admit(self) -> float | None:
        """Take one request; None when admitted, else the seconds until one would be."""
        now = self._clock()
        buckets = self._buckets()
        for bucket in buckets:
            bucket.refill(now)
        wait = max(bucket.wait_for(1.0) for bucket in buckets)
        if wait > 0 and self._requests:
            return wait
        for bucket in buckets:
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
        return None

    def spend_tokens(self, count: int) -> None:
        """Record tokens an answer used (reported in headers, never enforced)."""
        self._tokens.refill(self._clock())
        self._tokens.tokens = max(0.0, self._tokens.tokens - count)

    def headers(self) -> dict[str, str]:
        """Both header families, from the most depleted request bucket and the token bucket."""
        now = self._clock()
        wall = time.time()
        requests = self._buckets()
        for bucket in requests:
            bucket.refill(now)
        self._tokens.refill(now)
        request = min(requests, key=lambda bucket: bucket.tokens / bucket.capacity)
        headers: dict[str, str] = {}
        for name, bucket in (("requests", request), ("tokens", self._tokens)):
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
