"""The HTTP transport under the client: httpx's transport API over one aiohttp session.

httpx's own transport spent ~8 ms of CPU per request at concurrency 256 here, and the
general-purpose `httpx_aiohttp` adapter rebuilt per request what a run sends alike every
time (timeouts, header mappings, a proxy URL string) and wrapped every aiohttp exception
in an httpx one that the client then unwrapped again. This one takes an `Outgoing` and
gives an `Answer`, which a test's `httpx.MockTransport` response becomes too (`Answer.of`),
so `client.exchange` sees one interface; it keeps httpx's transport API for other callers,
and hands aiohttp's exceptions up as they are: `client`'s error boundary has
`transport_error` (here, beside the exceptions it reads) name them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import httpx
from aiohttp.http_exceptions import HttpProcessingError

from batchrunner.errors import (
    ConnectionSetupError,
    Context,
    PeerProtocolError,
    RetryableError,
)
from batchrunner.responses import snippet

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

    from batchrunner.redaction import Redactor

# Connect and pool waits are bounded by the request's deadline (`client.exchange`); these
# are only what httpx's Timeout says on top.
_TimeoutKey = tuple[float, float | None]


class Answer:
    """An answer's status and header pairs as they came (undecoded), its body still to read
    from `stream`. What the client needs of httpx's Response, which would also build a
    Headers object that normalises every name twice and every value once (~0.03 ms per
    answer) and enter a context manager to close: the client decodes the pairs once
    itself (the redactor)."""

    __slots__ = ("header_pairs", "status_code", "stream")

    def __init__(
        self,
        status_code: int,
        header_pairs: Sequence[tuple[bytes, bytes]],
        stream: httpx.AsyncByteStream,
    ) -> None:
        self.status_code = status_code
        self.header_pairs = header_pairs
        self.stream = stream

    @classmethod
    def of(cls, response: httpx.Response) -> Answer:
        """httpx's response as an Answer (a test's MockTransport answers with one). Its
        stream itself, not `aiter_raw()`, which refuses a body that was already read."""
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        return cls(response.status_code, response.headers.raw, stream)

    async def aclose(self) -> None:
        await self.stream.aclose()


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request as the client sends it: `headers` complete (the client's, the
    convention's, the content type) and shared between requests, never changed."""

    method: str
    url: str
    headers: Mapping[str, str]
    content: bytes | None
    timeout_s: float  # connect, pool and write
    # The gap between chunks of the answer; None: no such bound (a deadline covers it all)
    read_timeout_s: float | None

    def to_httpx(self) -> httpx.Request:
        """The same request for an httpx transport (a test's MockTransport)."""
        t, read = self.timeout_s, self.read_timeout_s
        timeout = {"connect": t, "read": read, "write": t, "pool": t}
        return httpx.Request(
            self.method,
            self.url,
            headers=self.headers,
            content=self.content,
            extensions={"timeout": timeout},
        )


class _Body(httpx.AsyncByteStream):
    """An answer's bytes as aiohttp reads them, still encoded (decoding is `bodies`')."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    def __aiter__(self) -> AsyncIterator[bytes]:
        # aiohttp's own iterator, not an async generator of ours: asyncio registers every
        # async generator it starts in a weak set and finalises it (~1 µs per answer).
        return self._response.content.iter_any()

    async def aclose(self) -> None:
        # release() returns a fully read connection to the pool and closes one with unread
        # bytes (a body over the cap, an abandoned stream): never reused half-read.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (made on first use, inside the run's event loop) with a pool of
    `limit` connections kept alive for `keepalive_s`, the CAs of `ssl_context` (None: no
    connection speaks TLS, so aiohttp's defaults, never used), and every
    request sent through `proxy` (with `proxy_headers` on its CONNECT) when one is set."""

    def __init__(
        self,
        *,
        limit: int,
        keepalive_s: float,
        ssl_context: ssl.SSLContext | None,
        proxy: str | None = None,
        proxy_headers: dict[str, str] | None = None,
    ) -> None:
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._ssl = ssl_context
        self._proxy = proxy
        self._proxy_headers = proxy_headers
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[_TimeoutKey, aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            keepalive_timeout=self._keepalive_s,
            ssl=self._ssl if self._ssl is not None else True,
        )
        # No cookie jar: an API client has no use for cookies, and parsing them per answer
        # cost ~0.2 ms of CPU per request here.
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
        )
        return self._session

    def _timeout(self, out: Outgoing) -> aiohttp.ClientTimeout:
        key = (out.timeout_s, out.read_timeout_s)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                sock_connect=out.timeout_s, sock_read=out.read_timeout_s, connect=out.timeout_s
            )
            self._timeouts[key] = timeout
        return timeout

    async def send(self, out: Outgoing) -> Answer:
        """`out` on the wire; the answer's head, its body still to read."""
        session = self._session or self._open()
        response = await session.request(
            out.method,
            out.url,
            headers=out.headers,
            data=out.content,
            allow_redirects=False,
            compress=False,
            timeout=self._timeout(out),
            proxy=self._proxy,
            proxy_headers=self._proxy_headers,
        )
        return Answer(response.status, response.raw_headers, _Body(response))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's transport API, for completeness: the client sends `Outgoing`s."""
        timeout = request.extensions.get("timeout", {})
        t = timeout.get("connect") or timeout.get("pool") or 600.0
        out = Outgoing(
            request.method,
            str(request.url),
            {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw},
            request.content or None,
            t,
            timeout.get("read") or t,
        )
        answer = await self.send(out)
        return httpx.Response(answer.status_code, headers=answer.header_pairs, stream=answer.stream)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def transport_error(exc: Exception, redactor: Redactor, context: Context) -> RetryableError:
    """What an exception of the transport stands for, with `context` (what had arrived of
    the answer): connection resets, truncated bodies, timeouts, a peer that is no HTTP(S)
    server: all worth another attempt for a row (the preflight stops on a
    PeerProtocolError); or this machine's settings (CAs, proxy): ConnectionSetupError."""
    setup = _setup_failure(exc)
    if setup is not None:
        return ConnectionSetupError(redactor.prose(setup), **context)
    foreign = _foreign_protocol(exc)
    if foreign is not None:
        return PeerProtocolError(redactor.prose(foreign), **context)
    error_type, message = _transport_failure(exc)
    return RetryableError(error_type, redactor.prose(message), **context)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def _setup_failure(exc: BaseException) -> str | None:
    """Why this machine's settings keep the connection from being made, or None: a
    certificate no trusted CA signed (or for another host), or a proxy refusing the tunnel.
    Deepest cause first: aiohttp's wrapper is an SSLCertVerificationError without reason."""
    for cause in reversed(list(_causes(exc))):
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = getattr(cause, "verify_message", None) or _one_line(cause)
            return (
                f"the server's TLS certificate is not trusted (certificate verify failed: "
                f"{why}); if a private CA signed it, point SSL_CERT_FILE (or SSL_CERT_DIR) "
                "at that CA"
            )
        if isinstance(cause, aiohttp.ClientHttpProxyError):
            return (
                f"the proxy refused the connection (HTTP {cause.status} {cause.message}); "
                "check HTTPS_PROXY/HTTP_PROXY (and its user:password) or NO_PROXY"
            )
    return None


def _foreign_protocol(exc: BaseException) -> str | None:
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


def _transport_failure(exc: BaseException) -> tuple[str, str]:
    """(error_type, message) for a transport exception.

    A test's MockTransport raises httpx's classes; aiohttp's may wrap the cause, so the
    whole chain is looked at to name the failure truthfully.
    """
    for cause in _causes(exc):
        if isinstance(cause, aiohttp.ClientPayloadError):
            return "connection_error", f"response body truncated: {cause}"
        if isinstance(cause, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
            return "connection_error", f"connection lost: {cause}"
        if isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError):
            return "timeout", f"timed out: {cause}"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", f"timed out: {type(exc).__name__}"
    return "connection_error", f"{type(exc).__name__}: {exc}"


def _one_line(value: object) -> str:
    return snippet(str(value), 200)
