"""HTTP: one httpx client per run on the aiohttp transport; one row's attempts and retries.

The only module that imports the HTTP stack. Foreign exceptions and status codes become
`RequestError`s at one boundary (`_classify_*`). Every attempt is reported to `on_attempt`
(the run's calls.log). Nothing here touches files or decides about the run as a whole.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import httpx
from httpx_aiohttp import AiohttpTransport

from batchrunner import __version__
from batchrunner.breakers import redact
from batchrunner.errors import PermanentError, RequestError, RetryableError
from batchrunner.protocols import parse_error_body
from batchrunner.ratelimits import parse_retry_after
from batchrunner.records import Completion, RawResponse, Request
from batchrunner.sse import SSEDecoder

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from batchrunner.pacing import Pacer
    from batchrunner.protocols.base import Protocol
    from batchrunner.retrying import RetryPolicy

ANTHROPIC_VERSION = "2023-06-01"
USER_AGENT = f"batchrunner/{__version__}"
# The SDKs retry these; 409 is a lock conflict, 408 a server-side timeout.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# 429s that no wait will cure: retrying them only burns the run's time.
PERMANENT_CODES = frozenset(
    {"insufficient_quota", "billing_hard_limit_reached", "enforced_spend_limit_reached"}
)
_STATUS_TYPES = {
    408: "timeout",
    409: "conflict",
    429: "rate_limit_error",
    529: "overloaded_error",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One attempt, as calls.log records it."""

    row_id: str
    attempt: int
    http_status: int | None
    request_id: str | None
    response_id: str | None
    latency_ms: float
    error_type: str | None
    retry_after: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    """What became of one row's request after all its attempts."""

    raw: RawResponse | None
    completion: Completion | None
    error: RequestError | None
    attempts: int
    latency_ms: float


class _NoCookies(httpx.Cookies):
    """An API client has no use for cookies, and http.cookiejar's parsing of every
    response cost ~0.2 ms of CPU per request here (a fifth of the client's budget)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _ApiClient(httpx.AsyncClient):
    _no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, value: object) -> None:
        """Cookies given to the client are ignored (none are ever sent)."""


def make_client(*, base_url: str, api_key: str, concurrency: int) -> httpx.AsyncClient:
    """One client per run: keep-alive pool as large as the number of workers.

    httpx's native transport spends ~8 ms of CPU per request at high concurrency
    (ARCHITECTURE.md); the aiohttp transport ~0.45 ms.
    """
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=60
    )
    return _ApiClient(
        base_url=base_url.rstrip("/") + "/",
        transport=AiohttpTransport(limits=limits),
        headers={
            "Authorization": f"Bearer {api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        },
        follow_redirects=False,
    )


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
) -> Sent:
    """Send one row's request with retries; never raises a `RequestError`.

    `timeout_s` is a total deadline per attempt (httpx's read timeout only bounds the gap
    between chunks); `idle_timeout_s` bounds that gap for streams.
    """
    started = time.monotonic()
    attempts = 0
    cost = request.est_input_tokens + request.max_tokens
    headers = {"anthropic-version": ANTHROPIC_VERSION} if request.api == "messages" else {}
    read_timeout = idle_timeout_s if request.stream and idle_timeout_s else timeout_s
    timeout = httpx.Timeout(timeout_s, read=read_timeout)

    async def one_attempt() -> tuple[RawResponse, Completion]:
        nonlocal attempts
        attempts += 1
        if pacer is not None:
            await pacer.acquire(cost)
        t0 = time.monotonic()
        raw: RawResponse | None = None
        error: RequestError | None = None
        try:
            with anyio.fail_after(timeout_s):
                answer = await _attempt(client, request, protocol, headers, timeout)
            try:
                # A 200 whose body does not fit the convention is a transient failure too.
                completion = protocol.parse_response(answer.body)
            except RequestError as exc:
                exc.http_status, exc.request_id = answer.status, answer.request_id
                raise
            raw = answer
            return raw, completion
        except RequestError as exc:
            error = exc
            raise
        except TimeoutError as exc:
            error = RetryableError("timeout", f"no complete answer within {timeout_s:g} s")
            raise error from exc
        finally:
            if pacer is not None:
                pacer.release(
                    status=raw.status if raw else (error.http_status if error else None),
                    headers=raw.headers if raw else (error.headers if error else {}),
                    retry_after=error.retry_after if error else None,
                    cost_tokens=cost,
                    used_tokens=_used_tokens(raw),
                )
            if on_attempt is not None:
                on_attempt(_attempt_log(request, attempts, raw, error, t0))

    def sent(
        raw: RawResponse | None, completion: Completion | None, error: RequestError | None
    ) -> Sent:
        latency = _ms_since(started)
        return Sent(
            raw=raw, completion=completion, error=error, attempts=attempts, latency_ms=latency
        )

    try:
        return sent(*await one_attempt(), None)
    except RequestError as exc:
        wait = policy.first_wait(exc, elapsed_s=time.monotonic() - started)
        if wait is None:
            return sent(None, None, exc)
    await anyio.sleep(wait)
    try:
        async for attempt in policy.retrying(attempts_made=1, elapsed_s=time.monotonic() - started):
            with attempt:
                raw, completion = await one_attempt()
    except RequestError as exc:
        return sent(None, None, exc)
    return sent(raw, completion, None)


async def _attempt(
    client: httpx.AsyncClient,
    request: Request,
    protocol: Protocol,
    headers: dict[str, str],
    timeouts: httpx.Timeout,  # httpx's per-request timeouts; the total deadline is the caller's
) -> RawResponse:
    # An absolute httpx.URL skips the relative-URL merge httpx does per request (~0.15 ms).
    url = _url(str(client.base_url), request.path)
    try:
        if not request.stream:
            response = await client.post(url, json=request.body, headers=headers, timeout=timeouts)
            return _classify_response(response)
        async with client.stream(
            "POST", url, json=request.body, headers=headers, timeout=timeouts
        ) as response:
            is_sse = "text/event-stream" in response.headers.get("content-type", "")
            if not 200 <= response.status_code < 300 or not is_sse:
                # An error, or a server that ignored `stream: true` and sent plain JSON.
                await response.aread()
                return _classify_response(response)
            return await _read_stream(response, protocol)
    except httpx.TransportError as exc:
        raise _classify_transport(exc) from exc


async def _read_stream(response: httpx.Response, protocol: Protocol) -> RawResponse:
    decoder = SSEDecoder()
    assembler = protocol.new_assembler()
    headers = _lower(response.headers)
    rid = _request_id(headers)
    try:
        async for chunk in response.aiter_bytes():
            for event in decoder.feed(chunk):
                assembler.feed(event)
        for event in decoder.flush():
            assembler.feed(event)
        body = assembler.finish()
    except httpx.TransportError as exc:
        # The stream was cut after its 200 arrived: say so in the attempt's status.
        error = _classify_transport(exc)
        error.request_id, error.http_status = rid, response.status_code
        raise error from exc
    except RequestError as exc:
        exc.request_id = exc.request_id or rid
        exc.http_status = exc.http_status or response.status_code
        raise
    return RawResponse(status=response.status_code, headers=headers, body=body, request_id=rid)


def _classify_response(response: httpx.Response) -> RawResponse:
    """A complete response -> RawResponse, or the RequestError it stands for."""
    status = response.status_code
    headers = _lower(response.headers)
    rid = _request_id(headers)
    body = _json_or_none(response)
    if 200 <= status < 300:
        if not isinstance(body, dict):
            raise RetryableError(
                "invalid_response",
                f"the {status} response body is not a JSON object",
                http_status=status,
                request_id=rid,
            )
        return RawResponse(
            status=status,
            headers=headers,
            body=body,
            request_id=rid,
            body_text=response.content.decode("utf-8", errors="replace"),
        )
    error_type, message, code = parse_error_body(body)
    error_type = (
        error_type
        or _STATUS_TYPES.get(status)
        or ("api_error" if status >= 500 else "invalid_request_error")
    )
    message = _scrub(message or _snippet(response.text) or f"HTTP {status}", response)
    retry_after = parse_retry_after(headers, now=time.time())
    cls = _error_class(status, headers, code, error_type)
    error = cls(
        error_type,
        message,
        http_status=status,
        request_id=rid,
        retry_after=retry_after,
        code=code,
        headers=headers,
    )
    raise error


def _scrub(text: str, response: httpx.Response) -> str:
    """The server's words without our key: a gateway may echo the Authorization header,
    and error messages end up in results.parquet and on the terminal."""
    auth = response.request.headers.get("authorization", "")
    key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if key:
        text = text.replace(key, "[redacted]")
    return redact(text)


def _error_class(
    status: int, headers: Mapping[str, str], code: str | None, error_type: str
) -> type[RequestError]:
    override = headers.get("x-should-retry", "").strip().lower()
    if override in ("true", "false"):
        return RetryableError if override == "true" else PermanentError
    if code in PERMANENT_CODES or error_type in PERMANENT_CODES:
        return PermanentError
    if status in RETRYABLE_STATUSES or status >= 500:
        return RetryableError
    return PermanentError


def _classify_transport(exc: httpx.TransportError) -> RetryableError:
    """Connection resets, truncated bodies and timeouts: all worth another attempt.

    The aiohttp transport maps some disconnects to httpx timeout classes, so look at the
    underlying aiohttp exception to name the failure truthfully.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, aiohttp.ClientPayloadError):
            return RetryableError("connection_error", f"response body truncated: {cause}")
        if isinstance(cause, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
            return RetryableError("connection_error", f"connection lost: {cause}")
        if isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError):
            return RetryableError("timeout", f"timed out: {cause}")
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TimeoutException):
        return RetryableError("timeout", f"timed out: {type(exc).__name__}")
    return RetryableError("connection_error", f"{type(exc).__name__}: {exc}")


def _attempt_log(
    request: Request,
    number: int,
    raw: RawResponse | None,
    error: RequestError | None,
    t0: float,
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


@functools.lru_cache(maxsize=64)
def _url(base: str, path: str) -> httpx.URL:
    return httpx.URL(base).join(path.lstrip("/"))


def _request_id(headers: Mapping[str, str]) -> str | None:
    """`request-id` (Anthropic style) or `x-request-id` (OpenAI style); lower-case names."""
    return headers.get("request-id") or headers.get("x-request-id")


def _lower(headers: httpx.Headers) -> dict[str, str]:
    # From the raw bytes: httpx's items() re-detects the encoding per header (~0.05 ms).
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers.raw}


def _snippet(text: str, limit: int = 300) -> str:
    """Non-JSON error bodies (a proxy's HTML page) shortened to one line."""
    flat = " ".join(text.split())
    return flat[:limit] + ("…" if len(flat) > limit else "")


def _ms_since(t0: float) -> float:
    return (time.monotonic() - t0) * 1000.0


async def _get_models(client: httpx.AsyncClient, timeout_s: float) -> httpx.Response:
    with anyio.fail_after(timeout_s):
        response = await client.get("models", timeout=timeout_s)
        await response.aread()
    return response


async def preflight(
    client: httpx.AsyncClient, *, timeout_s: float = 15.0
) -> tuple[RequestError | None, dict[str, str]]:
    """One GET {base}/models before the first generation: is the key accepted, and which
    rate limits does the server announce? Returns (error or None, response headers).

    Transport failures and timeouts return (None, {}): the run's own retries will meet
    them; a preflight must never be the reason a run fails.
    """
    try:
        response = await _get_models(client, timeout_s)
    except (httpx.TransportError, TimeoutError):
        return None, {}
    try:
        return None, _classify_response(response).headers
    except RequestError as exc:
        return exc, dict(exc.headers)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


async def list_models(*, base_url: str, api_key: str, timeout_s: float = 30.0) -> list[str]:
    """`check`: GET {base}/models once (no retries: a preflight should answer fast or say
    why). Raises RunAbortedError naming the cause when it cannot."""
    from batchrunner.breakers import run_failure
    from batchrunner.errors import RunAbortedError

    async with make_client(base_url=base_url, api_key=api_key, concurrency=1) as client:
        try:
            raw = _classify_response(await _get_models(client, timeout_s))
        except httpx.TransportError as exc:
            raise RunAbortedError(f"cannot reach {base_url}: {_classify_transport(exc)}") from None
        except TimeoutError:
            raise RunAbortedError(f"{base_url} did not answer within {timeout_s:g} s") from None
        except RequestError as exc:
            raise RunAbortedError(run_failure(exc) or str(exc)) from None
    data = raw.body.get("data")
    if not isinstance(data, list):
        raise RunAbortedError(f"{base_url}/models did not return a model list")
    return [str(m.get("id")) for m in data if isinstance(m, dict)]
