"""One row's attempts: `send`, with retries, pacing and calls.log; every attempt alike.

The first attempt runs directly, the rest under tenacity (`retrying`), and each is the same
`_Attempts.one()`: the pacer admits it, `client.exchange` sends it and reads the answer
(its error boundary makes every failure a complete RequestError), `check` (--json-schema)
judges the answer, and it is reported to the pacer and to `on_attempt` (the run's
calls.log) however it ends. An answer that fails the check is asked again, up to
`output_retries` times, each ask with the policy's retries for transport failures. A
row's failure is returned in its `Sent`, never raised. Nothing here touches files or
decides about the run.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio

from batchrunner.bodies import DEFAULT_MAX_RESPONSE_BYTES
from batchrunner.client import exchange, post, redactor_of
from batchrunner.errors import InvalidOutputError, RequestError
from batchrunner.records import Attempt, Completion, RawResponse, Request, Sent

_MAX_MESSAGE = 300  # characters of an error message kept in calls.log

if TYPE_CHECKING:
    from collections.abc import Callable

    from batchrunner.client import ApiClient
    from batchrunner.pacing import Pacer
    from batchrunner.protocols.base import ResponseReader
    from batchrunner.retrying import RetryPolicy


async def send(
    client: ApiClient,
    request: Request,
    *,
    protocol: ResponseReader,
    policy: RetryPolicy,
    timeout_s: float,
    idle_timeout_s: float | None = None,
    pacer: Pacer | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    check: Callable[[Completion], Completion] | None = None,
    output_retries: int = 0,
) -> Sent:
    """Send one row's request with retries; never raises a `RequestError`.

    `timeout_s` is a total deadline per attempt (httpx's read timeout only bounds the gap
    between chunks); `idle_timeout_s` bounds that gap for streams. With a cost cap on the
    pacer (`Pacer.cost`), each attempt holds its worst-case cost while it is out. Raises
    AdmissionClosedError when the pacer is closed or the cost cap refuses the attempt.
    `check` judges each answer (raising InvalidOutputError); a failed one is asked again
    `output_retries` times at most, and the last such answer is the `raw` of the errored
    Sent.
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
        check=check,
    )
    asked = 0
    while True:
        try:
            raw, completion = await _ask(attempts, policy)
        except InvalidOutputError as exc:
            asked += 1
            if asked <= output_retries:
                continue  # ask again: an answer that does not fit is worth another try
            return _failed(attempts, exc, started, raw=attempts.last_raw)
        except RequestError as exc:
            return _failed(attempts, exc, started)
        return Sent(
            raw=raw,
            completion=completion,
            error=None,
            attempts=attempts.count,
            latency_ms=_ms_since(started),
        )


def _failed(
    attempts: _Attempts, error: RequestError, started: float, *, raw: RawResponse | None = None
) -> Sent:
    return Sent(
        raw=raw,
        completion=None,
        error=error,
        attempts=attempts.count,
        latency_ms=_ms_since(started),
    )


async def _ask(attempts: _Attempts, policy: RetryPolicy) -> tuple[RawResponse, Completion]:
    """One ask: the first attempt, then the policy's retries; raises the last error."""
    started = time.monotonic()
    try:
        return await attempts.one()
    except RequestError as first:
        return await _retry(attempts, policy, first, started)


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
        "check",
        "client",
        "cost",
        "costcap",
        "count",
        "idle_timeout_s",
        "last_raw",
        "on_attempt",
        "pacer",
        "protocol",
        "redactor",
        "request",
        "timeout_s",
    )

    def __init__(
        self,
        client: ApiClient,
        request: Request,
        *,
        protocol: ResponseReader,
        timeout_s: float,
        idle_timeout_s: float | None,
        pacer: Pacer | None,
        on_attempt: Callable[[Attempt], None] | None,
        cap: int,
        check: Callable[[Completion], Completion] | None = None,
    ) -> None:
        self.client = client
        self.costcap = pacer.cost if pacer is not None else None
        self.check = check
        self.last_raw: RawResponse | None = None  # the last answer that failed `check`
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
        to the pacer, the cost cap and `on_attempt` however it ends."""
        held = await self.costcap.admit(self.request) if self.costcap is not None else None
        self.count += 1
        if self.pacer is not None:
            try:
                # A retry waited out its backoff without a slot; it goes before new rows.
                await self.pacer.acquire(self.cost, retry=self.count > 1)
            except BaseException:  # closed, or cancelled while waiting: nothing was sent
                self._settle_cost(held, None)
                raise
        t0 = time.monotonic()
        raw: RawResponse | None = None
        completion: Completion | None = None
        error: RequestError | None = None
        cancelled = False
        try:
            http = post(
                self.client,
                self.request,
                timeout_s=self.timeout_s,
                idle_timeout_s=self.idle_timeout_s,
            )
            raw, parsed = await exchange(
                self.client,
                http,
                self.protocol.parse_response,
                timeout_s=self.timeout_s,
                cap=self.cap,
                new_assembler=self.protocol.new_assembler if self.request.stream else None,
                redactor=self.redactor,
            )
            completion = parsed  # for the cost cap: what the answer cost, valid or not
            if self.check is not None:
                return raw, self._checked(raw, parsed)
            return raw, parsed
        except RequestError as exc:
            error = exc
            raise
        except anyio.get_cancelled_exc_class():
            # A stop or the stall watchdog took the attempt off the wire: calls.log says
            # so, rather than showing a line of nulls.
            cancelled = True
            raise
        finally:
            self._settle_cost(held, completion)
            self._report(raw, error, t0, cancelled=cancelled)

    def _settle_cost(self, held: float | None, completion: Completion | None) -> None:
        if self.costcap is not None and held is not None:
            self.costcap.settle(held, self.request, completion)

    def _checked(self, raw: RawResponse, completion: Completion) -> Completion:
        assert self.check is not None
        try:
            return self.check(completion)
        except InvalidOutputError as exc:
            self.last_raw = raw
            # The answer's own status and request id, as every error of an attempt has.
            status, rid = raw.status, raw.request_id
            raise exc.remade(http_status=status, request_id=rid, headers=raw.headers) from None

    def _report(
        self,
        raw: RawResponse | None,
        error: RequestError | None,
        t0: float,
        *,
        cancelled: bool = False,
    ) -> None:
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
            attempt = _attempt_log(self.request, self.count, raw, error, t0, slowed)
            if cancelled:
                attempt = replace(attempt, error_type="cancelled")
            self.on_attempt(attempt)


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
        error_message=_shorten(error.message) if error else None,
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


def _shorten(message: str) -> str:
    """A message for calls.log: one line, at most `_MAX_MESSAGE` characters (an error body
    can be a whole HTML page). It was redacted when the error was made."""
    text = " ".join(message.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _ms_since(t0: float) -> float:
    return (time.monotonic() - t0) * 1000.0
