"""Small hostile servers on 127.0.0.1 for tests: what a real API should never do, on demand.

`hostile_api()` serves the Messages convention and picks its misbehaviour from the row's
prompt (`big-chunked`, `gzip-bomb`, `echo-type`, ...; anything else gets a normal answer),
so rows of one run can each meet a different one. `web_server()` is a plain web server
(404 or an HTML page for everything); `not_http_server()` answers with bytes that are not
HTTP. Each runs on its own event loop in a thread and counts what it was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakeserver import serve_on_thread

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from tests.fakeserver import Stop

_CHUNK = b"a" * 65536


@dataclass
class HostileState:
    """What the server saw, and switches a test may flip while it runs."""

    big_bytes: int = 5_000_000  # size of the oversized answers
    fail_status: int | None = None  # answer every generation with this status
    fail_body: dict[str, Any] | None = None  # and this error body (an api_error otherwise)
    prompts: Counter[str] = field(default_factory=Counter)
    paths: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Served:
    base_url: str  # ends in /v1
    state: HostileState
    port: int


def message(text: str, *, model: str = "caicaini/auto", msg_id: str = "msg_01") -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def _stream_events(*texts: str) -> list[dict[str, Any]]:
    start = {**message(""), "content": [], "stop_reason": None}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    events.append(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    )
    for text in texts:
        delta = {"type": "text_delta", "text": text}
        events.append({"type": "content_block_delta", "index": 0, "delta": delta})
    events.append({"type": "content_block_stop", "index": 0})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 2},
        }
    )
    events.append({"type": "message_stop"})
    return events


def _big_body() -> tuple[bytes, bytes]:
    """A message as (head, tail) around its text, for a text streamed in between."""
    head, tail = json.dumps(message("@")).encode().split(b"@")
    return head, tail


def gzip_bomb(size: int) -> bytes:
    """A few KB of gzip that inflates to a valid message with `size` bytes of text."""
    head, tail = _big_body()
    return gzip.compress(head + b"a" * size + tail, 9)


async def _write_big(request: web.Request, size: int, *, length: bool) -> web.StreamResponse:
    head, tail = _big_body()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    if length:
        response.content_length = len(head) + size + len(tail)
    await response.prepare(request)
    await response.write(head)
    sent = 0
    while sent < size:
        piece = _CHUNK[: min(len(_CHUNK), size - sent)]
        try:
            await response.write(piece)
        except (ConnectionError, RuntimeError):
            return response  # the client stopped reading: what a capped reader does
        sent += len(piece)
    await response.write(tail)
    return response


async def _stream(request: web.Request, body: bytes) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write(body)
        await response.write_eof()
    return response


class _Api:
    def __init__(self, state: HostileState) -> None:
        self.state = state
        self._bomb: bytes | None = None

    def bomb(self) -> bytes:
        if self._bomb is None:
            self._bomb = gzip_bomb(self.state.big_bytes)
        return self._bomb

    async def models(self, request: web.Request) -> web.StreamResponse:
        self.state.paths.append(request.path)
        return web.json_response({"data": [{"id": "caicaini/auto"}], "object": "list"})

    async def messages(self, request: web.Request) -> web.StreamResponse:
        self.state.paths.append(request.path)
        body = await request.json()
        prompt = str(body["messages"][0]["content"])
        self.state.prompts[prompt] += 1
        key = request.headers.get("Authorization", "")[7:]
        if self.state.fail_status is not None:
            error = {"type": "error", "error": {"type": "api_error", "message": "down"}}
            body = self.state.fail_body or error
            return web.json_response(body, status=self.state.fail_status)
        handler = _MODES.get(prompt.split(" ")[0])
        if handler is not None:
            return await handler(self, request, key, bool(body.get("stream")))
        if body.get("stream"):
            return await _stream(request, _sse(*_stream_events(f"answer to {prompt}")))
        return web.json_response(message(f"answer to {prompt}"))


async def _big_chunked(
    api: _Api, request: web.Request, key: str, stream: bool
) -> web.StreamResponse:
    return await _write_big(request, api.state.big_bytes, length=False)


async def _big_length(
    api: _Api, request: web.Request, key: str, stream: bool
) -> web.StreamResponse:
    return await _write_big(request, api.state.big_bytes, length=True)


async def _gzip_bomb(api: _Api, request: web.Request, key: str, stream: bool) -> web.StreamResponse:
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    return web.Response(body=api.bomb(), headers=headers)


async def _gzip_ok(api: _Api, request: web.Request, key: str, stream: bool) -> web.StreamResponse:
    body = gzip.compress(json.dumps(message("answer in gzip")).encode())
    return web.Response(
        body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )


async def _big_error(api: _Api, request: web.Request, key: str, stream: bool) -> web.StreamResponse:
    page = b"<html>" + b"x" * api.state.big_bytes + b"</html>"
    return web.Response(status=503, body=page, content_type="text/html")


async def _big_stream(
    api: _Api, request: web.Request, key: str, stream: bool
) -> web.StreamResponse:
    pieces = ["b" * 65536] * (api.state.big_bytes // 65536 + 1)
    return await _stream(request, _sse(*_stream_events(*pieces)))


async def _echo_type(api: _Api, request: web.Request, key: str, stream: bool) -> web.StreamResponse:
    error = {"type": "error", "error": {"type": key, "message": f"refused {key}", "code": key}}
    return web.json_response(error, status=400, headers={"request-id": key})


async def _echo_request_id(
    api: _Api, request: web.Request, key: str, stream: bool
) -> web.StreamResponse:
    return web.json_response(message("fine"), headers={"request-id": f"req_{key}"})


async def _echo_text(api: _Api, request: web.Request, key: str, stream: bool) -> web.StreamResponse:
    if stream:  # split across two deltas: only the assembled message holds it whole
        events = _stream_events("your key: ", key[:6], key[6:])
        return await _stream(request, _sse(*events))
    return web.json_response(message(f"your key: {key}", model=key, msg_id=f"msg_{key}"))


async def _echo_escaped(
    api: _Api, request: web.Request, key: str, stream: bool
) -> web.StreamResponse:
    # The key with every character \u-escaped: no byte search finds it, json.loads does.
    escaped = "".join(f"\\u{ord(c):04x}" for c in key)
    text = json.dumps(message("@")).replace("@", f"key {escaped}")
    return web.Response(text=text, content_type="application/json")


async def _stream_echo(
    api: _Api, request: web.Request, key: str, stream: bool
) -> web.StreamResponse:
    start = {**message(""), "content": [], "stop_reason": None}
    error = {"type": "error", "error": {"type": "overloaded_error", "message": f"bad {key}"}}
    return await _stream(request, _sse({"type": "message_start", "message": start}, error))


async def _fail(api: _Api, request: web.Request, key: str, stream: bool) -> web.StreamResponse:
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}
    return web.json_response(error, status=400)


_MODES: dict[str, Callable[[_Api, web.Request, str, bool], Awaitable[web.StreamResponse]]] = {
    "big-chunked": _big_chunked,
    "big-length": _big_length,
    "gzip-bomb": _gzip_bomb,
    "gzip-ok": _gzip_ok,
    "big-error": _big_error,
    "big-stream": _big_stream,
    "echo-type": _echo_type,
    "echo-request-id": _echo_request_id,
    "echo-text": _echo_text,
    "echo-escaped": _echo_escaped,
    "stream-echo": _stream_echo,
    "fail": _fail,
}


def _web_app(kind: str, state: HostileState) -> web.Application:
    """Another web server: 404 (or an HTML page) for every path and method."""

    async def anything(request: web.Request) -> web.StreamResponse:
        state.paths.append(request.path)
        if kind == "html":
            return web.Response(text="<html><body>Welcome</body></html>", content_type="text/html")
        page = "<html><head><title>404 Not Found</title></head><body>nginx</body></html>"
        return web.Response(status=404, text=page, content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


def _app_starter(app: web.Application) -> Callable[[], Awaitable[tuple[int, Stop]]]:
    async def start() -> tuple[int, Stop]:
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner.addresses[0][1], runner.cleanup

    return start


@contextlib.contextmanager
def hostile_api(state: HostileState | None = None) -> Iterator[Served]:
    """The Messages API with the misbehaviours above, keyed by the prompt's first word."""
    state = state or HostileState()
    api = _Api(state)
    app = web.Application(client_max_size=1 << 20)
    app.router.add_get("/v1/models", api.models)
    app.router.add_post("/v1/messages", api.messages)
    with serve_on_thread(_app_starter(app), name="hostile") as port:
        yield Served(f"http://127.0.0.1:{port}/v1", state, port)


@contextlib.contextmanager
def web_server(kind: str = "404") -> Iterator[Served]:
    """A web server that is no API: `404` for everything, or `html`: a 200 page."""
    state = HostileState()
    with serve_on_thread(_app_starter(_web_app(kind, state)), name="hostile") as port:
        yield Served(f"http://127.0.0.1:{port}/v1", state, port)


@contextlib.contextmanager
def not_http_server(banner: bytes = b"SSH-2.0-OpenSSH_9.6") -> Iterator[Served]:
    """A TCP server that answers every connection with `banner` and the Authorization
    value it was sent (a protocol error message that quotes the request), then closes."""
    state = HostileState()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.read(4096)
        state.paths.append(head.split(b" ")[1].decode() if b" " in head else "")
        auth = next(
            (ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"authorization")), b""
        )
        writer.write(banner + b" " + auth.partition(b" ")[2] + b"\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def start() -> tuple[int, Stop]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        return server.sockets[0].getsockname()[1], stop

    with serve_on_thread(start, name="hostile") as port:
        yield Served(f"http://127.0.0.1:{port}/v1", state, port)
