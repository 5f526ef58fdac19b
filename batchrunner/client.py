"""HTTP: one httpx client per run on the aiohttp transport; one row's attempts and retries.

The only module that imports the HTTP stack; every request goes through `exchange`.
Transport exceptions become `RequestError`s there (`_classify_transport`), statuses and
bodies in `responses.classify`. Everything the server sent passes the run's `Redactor`
(bytes, header values and stream events as they arrive; every error as it leaves an
attempt), so no server echo of the key goes further. Bodies are read incrementally and
never past `max_response_bytes` decoded bytes (`bodies`). Every attempt is reported to
`on_attempt` (the run's calls.log). Nothing here touches files or decides about the run.
"""

from __future__ import annotations

import functools
import ssl
import time
from typing import TYPE_CHECKING

import aiohttp
import anyio
import httpx
from aiohttp.http_exceptions import HttpProcessingError
from httpx_aiohttp import AiohttpTransport

from batchrunner import __version__
from batchrunner.bodies import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_RESPONSE_BYTES,
    BodyDecoder,
    BodyTooLarge,
    too_large_by_length,
)
from batchrunner.errors import RequestError, RetryableError
from batchrunner.records import Attempt as Attempt  # re-exported: calllog, tests
from batchrunner.records import Completion, RawResponse, Request
from batchrunner.records import Sent as Sent  # re-exported: runner, outcomes
from batchrunner.redaction import Redactor
from batchrunner.responses import classify, request_id, snippet, too_large
from batchrunner.sse import SSEDecoder, SSEEvent

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from batchrunner.pacing import Pacer
    from batchrunner.protocols.base import Protocol
    from batchrunner.retrying import RetryPolicy

ANTHROPIC_VERSION = "2023-06-01"
USER_AGENT = f"batchrunner/{__version__}"
# What the transport raises: httpx's tree, plus aiohttp errors httpx_aiohttp does not map
# (a response that is not HTTP at all arrives as a bare aiohttp.ClientResponseError).
_TRANSPORT_ERRORS = (httpx.RequestError, aiohttp.ClientError)


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
            "Accept-Encoding": ACCEPT_ENCODING,
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
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
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
    redactor = redactor_of(client)
    url = _url(str(client.base_url), request.path)

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
                http = client.build_request(
                    "POST", url, json=request.body, headers=headers, timeout=timeout
                )
                raw = await exchange(
                    client, http, redactor, max_response_bytes, protocol if request.stream else None
                )
            return raw, _parse(raw, protocol)
        except RequestError as exc:
            # The one exit of every failure: nothing the server said leaves unredacted.
            raw, error = None, redactor.error(exc)
            raise error from None
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


def _parse(raw: RawResponse, protocol: Protocol) -> Completion:
    try:
        # A 200 whose body does not fit the convention is a transient failure too.
        return protocol.parse_response(raw.body)
    except RequestError as exc:
        exc.http_status, exc.request_id = raw.status, raw.request_id
        raise


async def exchange(
    client: httpx.AsyncClient,
    http: httpx.Request,
    redactor: Redactor,
    cap: int,
    protocol: Protocol | None,  # given: a text/event-stream answer is assembled with it
) -> RawResponse:
    """One request and its whole answer, read incrementally, as a RawResponse or the
    RequestError it stands for. Transport failures are classified here too."""
    try:
        response = await client.send(http, stream=True)
        try:
            headers = redactor.headers(response.headers.raw)
            status = response.status_code
            if (
                protocol is not None
                and 200 <= status < 300
                and "text/event-stream" in headers.get("content-type", "")
            ):
                return await _read_stream(response, headers, protocol, redactor, cap)
            # Anything else (an error, or a server that ignored `stream: true`) is read whole.
            try:
                data: bytes | None = await _read_body(response, headers, redactor, cap)
            except BodyTooLarge:
                data = None
            except RequestError as exc:  # a body that does not decode
                if not 200 <= status < 300:
                    data = b""  # an error status still says what happened
                else:
                    exc.http_status, exc.request_id = status, request_id(headers)
                    raise
            return classify(status, headers, data, redactor, cap)
        finally:
            await response.aclose()  # unread bytes (a body over the cap) close the connection
    except _TRANSPORT_ERRORS as exc:
        raise _classify_transport(exc) from exc


async def _read_body(
    response: httpx.Response, headers: dict[str, str], redactor: Redactor, cap: int
) -> bytes:
    if too_large_by_length(headers, cap):
        raise BodyTooLarge(cap)
    decoder = BodyDecoder(headers.get("content-encoding", ""), cap)
    chunks: list[bytes] = []
    async for chunk in _raw(response):
        chunks += decoder.feed(chunk)
    # One chunk is the common case, and b"".join of one bytes object does not copy it.
    tail = decoder.flush()
    if tail:
        chunks.append(tail)
    return redactor.raw(b"".join(chunks))


async def _read_stream(
    response: httpx.Response,
    headers: dict[str, str],
    protocol: Protocol,
    redactor: Redactor,
    cap: int,
) -> RawResponse:
    """An SSE answer assembled into the body a plain call returns. The cap counts the
    decoded stream, which bounds what the assembler can hold (the message is built from it).
    """
    status, rid = response.status_code, request_id(headers)
    decoder = BodyDecoder(headers.get("content-encoding", ""), cap)
    events = SSEDecoder()
    assembler = protocol.new_assembler()
    try:
        async for chunk in _raw(response):
            for piece in decoder.feed(chunk):
                for event in events.feed(piece):
                    assembler.feed(_clean_event(event, redactor))
        for event in [*events.feed(decoder.flush()), *events.flush()]:
            assembler.feed(_clean_event(event, redactor))
        body = assembler.finish()
    except BodyTooLarge:
        raise too_large(status, headers, cap) from None
    except _TRANSPORT_ERRORS as exc:
        # The stream was cut after its 200 arrived: say so in the attempt's status.
        error = _classify_transport(exc)
        error.request_id, error.http_status = rid, status
        raise error from exc
    except RequestError as exc:
        exc.request_id = exc.request_id or rid
        exc.http_status = exc.http_status or status
        raise
    # A key split across events is whole again in the assembled message: checked there too.
    body, text = redactor.stored(body, None)
    return RawResponse(status=status, headers=headers, body=body, request_id=rid, body_text=text)


def _raw(response: httpx.Response) -> httpx.AsyncByteStream:
    """The body as the transport yields it, still encoded: decoding is ours (bodies.py).

    The stream itself rather than `aiter_raw()`, whose bookkeeping serves httpcore and
    which refuses a body that a test's MockTransport response has already read.
    """
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    return stream


def _clean_event(event: SSEEvent, redactor: Redactor) -> SSEEvent:
    # Before the assembler quotes it (an error event's message, a malformed event's start).
    data = redactor.text(event.data)
    return event if data is event.data else SSEEvent(event.event, data)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def foreign_protocol(exc: BaseException) -> str | None:
    """Why the peer is not an HTTP(S) server as the URL promised, or None.

    A TLS handshake that fails (HTTPS to a plain-HTTP port, a certificate refused) or an
    answer that is not HTTP (plain HTTP to a TLS port, another protocol): no retry helps.
    """
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLError | aiohttp.ClientSSLError):
            return f"the TLS handshake failed ({_one_line(cause)})"
        if isinstance(cause, HttpProcessingError):
            return f"the answer is not HTTP ({_one_line(cause.message)})"
    return None


def _classify_transport(exc: BaseException) -> RetryableError:
    """Connection resets, truncated bodies and timeouts: all worth another attempt.

    The aiohttp transport maps some disconnects to httpx timeout classes, so look at the
    underlying aiohttp exception to name the failure truthfully.
    """
    foreign = foreign_protocol(exc)
    if foreign is not None:
        return RetryableError("connection_error", foreign)
    for cause in _causes(exc):
        if isinstance(cause, aiohttp.ClientPayloadError):
            return RetryableError("connection_error", f"response body truncated: {cause}")
        if isinstance(cause, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
            return RetryableError("connection_error", f"connection lost: {cause}")
        if isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError):
            return RetryableError("timeout", f"timed out: {cause}")
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


def redactor_of(client: httpx.AsyncClient) -> Redactor:
    """The redactor for the key this client sends (its Authorization header)."""
    return _redactor_for(client.headers.get("authorization", ""))


@functools.lru_cache(maxsize=8)
def _redactor_for(authorization: str) -> Redactor:
    scheme, _, key = authorization.partition(" ")
    return Redactor(key.strip() if scheme.lower() == "bearer" else "")


def _one_line(value: object) -> str:
    return snippet(str(value), 200)


def _ms_since(t0: float) -> float:
    return (time.monotonic() - t0) * 1000.0
