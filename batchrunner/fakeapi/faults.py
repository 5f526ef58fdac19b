"""Fault injection: which request fails and how, and the failing responses themselves.

The decision is a pure function of (seed, request content, times this content was seen),
capped per content, so retries replay the same story under any concurrency. The
transport-level faults (reset, truncate) close the connection; nothing else here does IO.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from batchrunner.fakeapi.limits import retry_headers
from batchrunner.fakeapi.options import STREAM_FAULTS, FakeOptions
from batchrunner.fakeapi.shapes import ApiError, Convention

if TYPE_CHECKING:
    from batchrunner.fakeapi.state import FakeState

HANG_SECONDS = 3600.0
_HTML = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def _unit(*parts: object) -> float:
    """A uniform number in [0, 1) from the hash of `parts`."""
    data = "\x1f".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") / 2.0**64


_PLAIN_BODY_FAULTS = frozenset({"truncate", "badjson"})


class FaultPlanner:
    """Decides, per generation request, whether it fails and with which fault kind."""

    def __init__(self, options: FakeOptions, state: FakeState) -> None:
        self._options = options
        self._state = state
        plain = tuple(kind for kind in options.faults if kind not in STREAM_FAULTS)
        # A streamed request can also be refused before its stream starts (a 529, a reset),
        # as a real service does; only faults of a plain JSON body cannot happen to it.
        before_stream = tuple(kind for kind in plain if kind not in _PLAIN_BODY_FAULTS)
        self._plain_kinds = plain
        self._stream_kinds = (
            tuple(kind for kind in options.faults if kind in STREAM_FAULTS) + before_stream
        )

    def decide(self, key: bytes, *, stream: bool) -> str | None:
        """The fault kind for this arrival of `key`, or None to answer normally."""
        options, state = self._options, self._state
        if options.fault_rate <= 0:
            return None
        seen = state.seen.get(key, 0)
        state.seen[key] = seen + 1
        kinds = self._stream_kinds if stream else self._plain_kinds
        if not kinds or state.faulted.get(key, 0) >= options.fault_max_per_prompt:
            return None
        hexkey = key.hex()
        if _unit(options.seed, hexkey, seen, "fault") >= options.fault_rate:
            return None
        state.faulted[key] = state.faulted.get(key, 0) + 1
        return kinds[int(_unit(options.seed, hexkey, seen, "kind") * len(kinds))]


@dataclass(frozen=True, slots=True)
class StatusFault:
    """An HTTP error answer standing for a fault, with what its retry headers said."""

    error: ApiError | None  # None: a non-JSON (HTML) body
    status: int
    retry_after: float | None
    headers: dict[str, str]


def status_fault(kind: str, conv: Convention, retry_after: float) -> StatusFault:
    """The error answer for a status fault kind (429*, 500, 502, 503, 504, 529)."""
    anthropic = conv == "anthropic"
    if kind.startswith("429"):
        style = {"429": "both", "429-ms": "ms", "429-date": "date"}[kind]
        error = (
            ApiError(429, "rate_limit_error", "Number of requests has exceeded your rate limit.")
            if anthropic
            else ApiError(
                429,
                "requests",
                "Rate limit reached for requests. Please try again later.",
                code="rate_limit_exceeded",
            )
        )
        return StatusFault(error, 429, retry_after, retry_headers(retry_after, style=style))
    if kind in ("502", "504"):
        return StatusFault(None, int(kind), None, {})
    if kind == "500":
        error = (
            ApiError(500, "api_error", "Internal server error")
            if anthropic
            else ApiError(
                500,
                "server_error",
                "The server had an error while processing your request. Sorry about that!",
            )
        )
        return StatusFault(error, 500, None, {})
    if kind == "503":
        error = (
            ApiError(503, "api_error", "Service unavailable")
            if anthropic
            else ApiError(
                503,
                "service_unavailable_error",
                "The server is overloaded or not ready yet.",
                code="server_is_overloaded",
            )
        )
        return StatusFault(error, 503, retry_after, retry_headers(retry_after))
    if kind == "529":
        error_type = "overloaded_error" if anthropic else "server_error"
        return StatusFault(
            ApiError(529, error_type, "Overloaded"), 529, retry_after, retry_headers(retry_after)
        )
    raise ValueError(f"not a status fault: {kind}")


def html_response(status: int) -> web.Response:
    """A proxy's HTML error page (the SDKs keep such a body as raw text)."""
    reason = {502: "Bad Gateway", 504: "Gateway Time-out"}.get(status, "Error")
    return web.Response(
        status=status,
        text=_HTML.format(status=status, reason=reason),
        content_type="text/html",
    )


def reset_connection(request: web.Request) -> web.Response:
    """Drop the connection with a TCP RST before any response byte goes out.

    The returned response is never sent: aiohttp fails to write it to the closed transport
    and treats that as a client disconnect, which is what keeps the server quiet.
    """
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER 0 turns close() into a reset instead of an orderly FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response()


async def truncated_response(request: web.Request, body: bytes) -> web.StreamResponse:
    """Announce the full Content-Length, send half the body, then close the connection."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()  # close(), not abort(): the half already written still goes
    return response


def bad_json_body(body: bytes) -> bytes:
    """A 200 body that is not JSON: the real body cut off, then an HTML fragment."""
    return body[: max(1, len(body) // 2)] + b"<!-- upstream connect error -->"


async def hang() -> None:
    """Never answer; ends when the client disconnects or the server stops (cancellation)."""
    await asyncio.sleep(HANG_SECONDS)
