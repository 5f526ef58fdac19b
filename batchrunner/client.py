"""HTTP: one httpx client per run on the aiohttp transport, and its one error boundary.

The only module that imports the HTTP stack. Every request goes through `exchange`, and
every failure leaves it through `exchange`'s error boundary (modelled on httpx's
`map_httpcore_exceptions`): transport exceptions, the deadline, a stream over the size
cap and errors raised below without the answer's status (a body that does not fit the
protocol) become complete `RequestError`s there. Statuses and bodies are judged in
`responses.classify`. Everything the server sent passes the run's `Redactor` (bytes,
header values and stream events as they arrive; every error as it is made), so no server
echo of the key goes further. Bodies are read incrementally and never past the size cap
(`bodies`). Retries, pacing and calls.log are `attempts`' job; nothing here touches files
or decides about the run.
"""

from __future__ import annotations

import asyncio
import functools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import aiohttp
import httpx

from batchrunner import jsoncodec, network
from batchrunner.bodies import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_RESPONSE_BYTES,
    BodyDecoder,
    BodyTooLarge,
    too_large_by_length,
)
from batchrunner.errors import (
    Context,
    RequestError,
    ResponseFormatError,
    RetryableError,
)
from batchrunner.records import JSONObject, RawResponse, Request
from batchrunner.redaction import Redactor
from batchrunner.responses import classify, request_id, too_large
from batchrunner.sse import SSEDecoder, SSEEvent
from batchrunner.transport import AiohttpTransport, Answer, Outgoing, transport_error
from batchrunner.version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from batchrunner.protocols.base import StreamAssembler

T = TypeVar("T")
ANTHROPIC_VERSION = "2023-06-01"
USER_AGENT = f"batchrunner/{__version__}"
# What the transport raises: aiohttp's errors as they are (`transport`), httpx's tree from a
# test's MockTransport.
_TRANSPORT_ERRORS = (httpx.RequestError, aiohttp.ClientError)


class _NoCookies(httpx.Cookies):
    """An API client has no use for cookies, and http.cookiejar's parsing of every
    response cost ~0.2 ms of CPU per request here (a fifth of the client's budget)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class ApiClient(httpx.AsyncClient):
    """httpx's client for building requests and holding the pool; `send_direct` hands a
    built request straight to the transport. `AsyncClient.send`'s auth, cookie, redirect
    and event-hook machinery (none of which an API client uses) cost ~0.05 ms of CPU per
    request here."""

    _no_cookies = _NoCookies()

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **options: object) -> None:
        super().__init__(transport=transport, **options)  # type: ignore[arg-type]
        self._direct = transport
        self.post_headers: dict[str, dict[str, str]] = {}  # `_post_headers`, per convention
        self.base = str(self.base_url)
        self.redactor = _redactor_for(self.headers.get("authorization", ""))

    async def send_direct(self, out: Outgoing) -> Answer:
        """`out` sent as it is: no redirect is followed, no cookie kept."""
        if isinstance(self._direct, AiohttpTransport):
            return await self._direct.send(out)
        return Answer.of(await self._direct.handle_async_request(out.to_httpx()))

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, value: object) -> None:
        """Cookies given to the client are ignored (none are ever sent)."""


def make_client(
    *,
    base_url: str,
    api_key: str,
    concurrency: int,
    transport: httpx.AsyncBaseTransport | None = None,
    env: Mapping[str, str] | None = None,
) -> ApiClient:
    """One client per run: keep-alive pool as large as the number of workers.

    httpx's native transport spent ~8 ms of CPU per request at concurrency 256 here; the
    aiohttp transport ~0.45 ms. `transport` replaces it (tests pass an httpx.MockTransport).
    Proxy and CAs: `network`, from `env` (default os.environ); ConfigError if unusable."""
    headers = {
        "Authorization": f"Bearer {api_key}",
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
        "Accept-Encoding": ACCEPT_ENCODING,
    }
    if transport is None:
        transport = _transport(base_url, concurrency, os.environ if env is None else env, headers)
    return ApiClient(
        base_url=base_url.rstrip("/") + "/",
        transport=transport,
        headers=headers,
        follow_redirects=False,
    )


def _transport(
    base_url: str, n: int, env: Mapping[str, str], headers: dict[str, str]
) -> AiohttpTransport:
    """The aiohttp transport with the environment's CAs and proxy for `base_url`: a CONNECT
    tunnel for https://, absolute-URI requests for http://. Proxy credentials go where
    aiohttp sends them without its deprecated `proxy_auth`: the CONNECT's headers, or each
    plain-HTTP request's own. Not aiohttp's `trust_env`: it looks the proxy up and reads
    ~/.netrc in a worker thread for every request."""
    proxy = network.proxy_for(base_url, env)
    https = base_url.lower().startswith("https:")
    tunnel_headers: dict[str, str] | None = None
    if proxy is not None and proxy.authorization:
        auth = {"Proxy-Authorization": proxy.authorization}
        if https:
            tunnel_headers = auth
        else:
            headers.update(auth)
    # Loading the CAs costs ~20 ms of CPU: only when a connection speaks TLS.
    tls = https or (proxy is not None and proxy.url.lower().startswith("https:"))
    return AiohttpTransport(
        limit=n,
        keepalive_s=60,
        ssl_context=network.ssl_context(env) if tls else None,
        proxy=proxy.url if proxy is not None else None,
        proxy_headers=tunnel_headers,
    )


def post(
    client: ApiClient, request: Request, *, timeout_s: float, idle_timeout_s: float | None
) -> Outgoing:
    """The HTTP request for `request`: POST {base}{path} with its JSON body and the
    convention's headers. `idle_timeout_s` bounds the gap between a stream's chunks; a
    plain answer has only `exchange`'s deadline, which a read timeout as long could never
    beat (aiohttp re-arms one for every chunk: ~2 µs per answer).

    Not httpx's `build_request` and `Request`, whose merging and normalising of the same
    headers for every request was a sixth of the client's CPU: the headers a convention
    sends are merged once per client (`_post_headers`)."""
    return Outgoing(
        "POST",
        _url(client.base, request.path),
        _post_headers(client, request.api),
        jsoncodec.dumps(request.body, allow_nan=False),
        timeout_s,
        idle_timeout_s if request.stream and idle_timeout_s else None,
    )


def get(client: ApiClient, path: str, *, timeout_s: float) -> Outgoing:
    """GET {base}{path} with the client's headers (`exchange`'s deadline bounds it all)."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in client.headers.raw}
    return Outgoing("GET", _url(client.base, path), headers, None, timeout_s, None)


def _post_headers(client: ApiClient, api: str) -> dict[str, str]:
    """The client's headers, the convention's and the JSON content type: what
    `build_request` would merge for every request, merged once per client and convention."""
    cached = client.post_headers.get(api)
    if cached is None:
        cached = {k.decode("latin-1"): v.decode("latin-1") for k, v in client.headers.raw}
        if api == "messages":
            cached["anthropic-version"] = ANTHROPIC_VERSION
        cached["Content-Type"] = "application/json"
        client.post_headers[api] = cached
    return cached


@dataclass(slots=True)
class _Seen:
    """What has arrived of an answer: the boundary gives its status and request id to the
    errors raised below it."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


async def exchange(
    client: ApiClient,
    http: Outgoing,
    parse: Callable[[JSONObject], T],
    *,
    timeout_s: float,
    cap: int = DEFAULT_MAX_RESPONSE_BYTES,
    new_assembler: Callable[[], StreamAssembler] | None = None,
    redactor: Redactor | None = None,
) -> tuple[RawResponse, T]:
    """One request and its whole answer within `timeout_s` (a deadline for all of it): the
    RawResponse and what `parse` makes of its body, or the complete RequestError it stands
    for. With `new_assembler`, a `text/event-stream` answer is assembled with it.
    """
    redactor = redactor if redactor is not None else redactor_of(client)
    seen = _Seen()
    # The one place where failures become the RequestErrors that leave the client. Errors
    # `responses.classify` made carry their status and are complete as they are. An error
    # raised below without one (a body or stream that does not fit the protocol, an error
    # event in a stream) is made anew with the status, request id and headers of the
    # answer it is about, redacted. Transport exceptions, the deadline and a stream over
    # the cap become errors here, with what had arrived of the answer.
    try:
        # asyncio's deadline rather than anyio's `fail_after`, a cancel scope inside two
        # generator context managers per attempt (~5% of a py-spy profile's samples; no
        # valid A/B of whole runs: BENCHMARKS.md). aiohttp ties the client to asyncio
        # anyway, and an outer cancel scope's cancellation still passes (asyncio.timeout
        # turns only its own into TimeoutError).
        async with asyncio.timeout(timeout_s):
            raw = await _exchange(client, http, seen, redactor, cap, new_assembler)
        return raw, parse(raw.body)
    except RequestError as exc:
        if exc.http_status is not None:
            raise
        rid = request_id(seen.headers)
        raise redactor.error(
            exc, http_status=seen.status, request_id=rid, headers=seen.headers
        ) from exc
    except BodyTooLarge as exc:
        raise too_large(seen.status, seen.headers, exc.cap) from None
    except _TRANSPORT_ERRORS as exc:
        raise transport_error(exc, redactor, _context(seen)) from exc
    except TimeoutError as exc:
        message = f"no complete answer within {timeout_s:g} s"
        raise RetryableError("timeout", message, **_context(seen)) from exc


async def _exchange(
    client: ApiClient,
    http: Outgoing,
    seen: _Seen,
    redactor: Redactor,
    cap: int,
    new_assembler: Callable[[], StreamAssembler] | None,
) -> RawResponse:
    response = await client.send_direct(http)
    try:
        seen.headers = headers = redactor.headers(response.header_pairs)
        seen.status = status = response.status_code
        if (
            new_assembler is not None
            and 200 <= status < 300
            and "text/event-stream" in headers.get("content-type", "")
        ):
            return await _read_stream(response, seen, new_assembler(), redactor, cap)
        # Anything else (an error, or a server that ignored `stream: true`) is read whole.
        try:
            data: bytes | None = await _read_body(response, headers, redactor, cap)
        except BodyTooLarge:
            data = None  # classify knows what that means for this status
        except ResponseFormatError:  # a body that does not decode
            if 200 <= status < 300:
                raise
            data = b""  # an error status still says what happened
        return classify(status, headers, data, redactor, cap)
    finally:
        await response.aclose()  # unread bytes (a body over the cap) close the connection


async def _read_body(
    response: Answer, headers: dict[str, str], redactor: Redactor, cap: int
) -> bytes:
    if too_large_by_length(headers, cap):
        raise BodyTooLarge(cap)
    decoder = BodyDecoder(headers.get("content-encoding", ""), cap)
    chunks: list[bytes] = []
    async for chunk in response.stream:
        chunks += decoder.feed(chunk)
    # One chunk is the common case, and b"".join of one bytes object does not copy it.
    tail = decoder.flush()
    if tail:
        chunks.append(tail)
    return redactor.raw(b"".join(chunks))


async def _read_stream(
    response: Answer,
    seen: _Seen,
    assembler: StreamAssembler,
    redactor: Redactor,
    cap: int,
) -> RawResponse:
    """An SSE answer assembled into the body a plain call returns. The cap counts the
    decoded stream, which bounds what the assembler can hold (the message is built from it).
    """
    decoder = BodyDecoder(seen.headers.get("content-encoding", ""), cap)
    events = SSEDecoder()
    async for chunk in response.stream:
        for piece in decoder.feed(chunk):
            for event in events.feed(piece):
                assembler.feed(_clean_event(event, redactor))
    for event in [*events.feed(decoder.flush()), *events.flush()]:
        assembler.feed(_clean_event(event, redactor))
    # A key split across events is whole again in the assembled message: checked there too.
    body, text = redactor.stored(assembler.finish(), None)
    return RawResponse(
        status=response.status_code,
        headers=seen.headers,
        body=body,
        request_id=request_id(seen.headers),
        body_text=text,
    )


def _clean_event(event: SSEEvent, redactor: Redactor) -> SSEEvent:
    # Before the assembler quotes it (an error event's message, a malformed event's start).
    data = redactor.text(event.data)
    return event if data is event.data else SSEEvent(event.event, data)


def _context(seen: _Seen) -> Context:
    """What an error raised at the boundary says of the answer it is about, if one came."""
    return Context(
        http_status=seen.status, request_id=request_id(seen.headers), headers=seen.headers
    )


@functools.lru_cache(maxsize=64)
def _url(base: str, path: str) -> str:
    return str(httpx.URL(base).join(path.lstrip("/")))


def redactor_of(client: ApiClient) -> Redactor:
    """The redactor for the key this client sends (its Authorization header)."""
    return client.redactor


@functools.lru_cache(maxsize=8)
def _redactor_for(authorization: str) -> Redactor:
    scheme, _, key = authorization.partition(" ")
    return Redactor(key.strip() if scheme.lower() == "bearer" else "")
