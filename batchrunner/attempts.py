"""One row's attempts: `send`, with retries, pacing and calls.log; every attempt alike.

The first attempt runs directly, the rest under tenacity (`retrying`), and each is the same
`_Attempts.one()`: the pacer admits it, `client.exchange` sends it and reads the answer
(its error boundary makes every failure a complete RequestError), and it is reported to
the pacer and to `on_attempt` (the run's calls.log) however it ends. A row's failure is
returned in its `Sent`, never raised. Nothing here touches files or decides about the run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from batchrunner.bodies import DEFAULT_MAX_RESPONSE_BYTES
from batchrunner.client import exchange, post, redactor_of
from batchrunner.errors import RequestError
from batchrunner.records import Attempt, Completion, RawResponse, Request, Sent

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from batchrunner.pacing import Pacer
    from batchrunner.protocols.base import Protocol
    from batchrunner.retrying import RetryPolicy


async def send(
    client: httpx.AsyncClient,
    request: Request,
    *,
    protocol: Protocol,
    policy: RetryPolicy,
    timeout_s: float,
    idle_timeout_s: float | None = None,
    pacer: Pacer | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Sent:
    """Send one row's request with retries; never raises a `RequestError`.

    `timeout_s` is a total deadline per attempt (httpx's read timeout only bounds the gap
    between chunks); `idle_timeout_s` bounds that gap for streams.
    """
    started = time.monotonic()
    attempts = _Attempts(
        client,
        request,
        protocol=protocol,
        timeout_s=timeout_s,
        idle_timeout_s=idle_timeout_s,
        pacer=pacer,
        on_attempt=on_attempt,
        cap=max_response_bytes,
    )
    try:
        raw, completion = await attempts.one()
    except RequestError as first:
        try:
            raw, completion = await _retry(attempts, policy, first, started)
        except RequestError as exc:
            return Sent(
                raw=None,
                completion=None,
                error=exc,
                attempts=attempts.count,
                latency_ms=_ms_since(started),
            )
    return Sent(
        raw=raw,
        completion=completion,
        error=None,
        attempts=attempts.count,
        latency_ms=_ms_since(started),
    )


async def _retry(
    attempts: _Attempts, policy: RetryPolicy, first: RequestError, started: float
) -> tuple[RawResponse, Completion]:
    """Attempts 2 and on, after the first failed: the same `attempts.one()`, under tenacity.

    The first attempt runs outside tenacity, whose machinery cost ~0.1 ms of CPU per row,
    and most rows need no retry; `policy.first_wait` makes tenacity's decisions for it.
    Raises the last attempt's error when the policy gives up.
    """
    wait = policy.first_wait(first, elapsed_s=time.monotonic() - started)
    if wait is None:
        raise first
    await anyio.sleep(wait)
    async for attempt in policy.retrying(attempts_made=1, elapsed_s=time.monotonic() - started):
        with attempt:
            raw, completion = await attempts.one()
    return raw, completion


class _Attempts:
    """One row's attempts. `one()` is every attempt alike, the first and each retry."""

    __slots__ = (
        "cap",
        "client",
        "cost",
        "count",
        "idle_timeout_s",
        "on_attempt",
        "pacer",
        "protocol",
        "redactor",
        "request",
        "timeout_s",
    )

    def __init__(
        self,
        client: httpx.AsyncClient,
        request: Request,
        *,
        protocol: Protocol,
        timeout_s: float,
        idle_timeout_s: float | None,
        pacer: Pacer | None,
        on_attempt: Callable[[Attempt], None] | None,
        cap: int,
    ) -> None:
        self.client = client
        self.request = request
        self.protocol = protocol
        self.pacer = pacer
        self.on_attempt = on_attempt
        self.cap = cap
        self.count = 0
        self.cost = request.est_input_tokens + request.max_tokens
        self.timeout_s = timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.redactor = redactor_of(client)

    async def one(self) -> tuple[RawResponse, Completion]:
        """One attempt: admission by the pacer, the exchange, the parsed answer; reported
        to the pacer and `on_attempt` however it ends."""
        self.count += 1
        if self.pacer is not None:
            # A retry waited out its backoff without a slot; it goes before new rows.
            await self.pacer.acquire(self.cost, retry=self.count > 1)
        t0 = time.monotonic()
        raw: RawResponse | None = None
        error: RequestError | None = None
        try:
            http = post(
                self.client,
                self.request,
                timeout_s=self.timeout_s,
                idle_timeout_s=self.idle_timeout_s,
            )
            raw, completion = await exchange(
                self.client,
                http,
                self.protocol.parse_response,
                timeout_s=self.timeout_s,
                cap=self.cap,
                new_assembler=self.protocol.new_assembler if self.request.stream else None,
                redactor=self.redactor,
            )
            return raw, completion
        except RequestError as exc:
            error = exc
            raise
        finally:
            self._report(raw, error, t0)

    def _report(self, raw: RawResponse | None, error: RequestError | None, t0: float) -> None:
        slowed = None
        if self.pacer is not None:
            slowed = self.pacer.release(
                status=raw.status if raw else (error.http_status if error else None),
                headers=raw.headers if raw else (error.headers if error else {}),
                retry_after=error.retry_after if error else None,
                cost_tokens=self.cost,
                used_tokens=_used_tokens(raw),
            )
        if self.on_attempt is not None:
            self.on_attempt(_attempt_log(self.request, self.count, raw, error, t0, slowed))


def _attempt_log(
    request: Request,
    number: int,
    raw: RawResponse | None,
    error: RequestError | None,
    t0: float,
    slowed: str | None,
) -> Attempt:
    response_id = raw.body.get("id") if raw is not None else None
    return Attempt(
        row_id=request.row_id,
        attempt=number,
        http_status=raw.status if raw else (error.http_status if error else None),
        request_id=raw.request_id if raw else (error.request_id if error else None),
        response_id=response_id if isinstance(response_id, str) else None,
        latency_ms=_ms_since(t0),
        error_type=error.error_type if error else None,
        retry_after=error.retry_after if error else None,
        slowed=slowed,
    )


def _used_tokens(raw: RawResponse | None) -> int | None:
    usage = raw.body.get("usage") if raw is not None else None
    if not isinstance(usage, dict):
        return None
    total = 0
    for key in ("input_tokens", "output_tokens", "prompt_tokens", "completion_tokens"):
        value = usage.get(key)
        if isinstance(value, int):
            total += value
    return total


def _ms_since(t0: float) -> float:
    return (time.monotonic() - t0) * 1000.0
