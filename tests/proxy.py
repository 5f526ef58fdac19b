"""A small forward proxy on 127.0.0.1 for tests: CONNECT tunnels and absolute-URI requests.

It records every request line it is sent (`CONNECT host:port`, `POST http://host/...`)
with its `Proxy-Authorization` header, and reaches targets through `routes`, a map from
the `host:port` a client asked for to the address really served: a test can then give the
client an address where nothing listens, so a request that went around the proxy fails
instead of passing unseen. An absolute-URI request is forwarded with `Connection: close`,
one request per connection, so each one is seen here.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.fakeserver import serve_on_thread

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fakeserver import Stop

_HOP_BY_HOP = {"connection", "proxy-connection", "proxy-authorization", "keep-alive"}


@dataclass
class ProxyState:
    """What the proxy saw; `routes` maps a requested `host:port` to where it is served."""

    routes: dict[str, tuple[str, int]] = field(default_factory=dict)
    refuse: int | None = None  # answer every request with this status instead
    requests: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)


@dataclass(frozen=True)
class RunningProxy:
    url: str  # http://127.0.0.1:PORT
    state: ProxyState


def _headers(lines: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for line in lines:
        name, _, value = line.partition(":")
        pairs.append((name.strip(), value.strip()))
    return pairs


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


async def _handle(
    state: ProxyState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
        return
    request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    method, target, version = request_line.split(" ")
    headers = _headers(lines)
    auth = next((v for k, v in headers if k.lower() == "proxy-authorization"), None)
    state.requests.append(f"{method} {target}")
    state.authorizations.append(auth)
    if state.refuse is not None:
        writer.write(f"HTTP/1.1 {state.refuse} Refused\r\nContent-Length: 0\r\n\r\n".encode())
        writer.close()
        return
    authority = target if method == "CONNECT" else urllib.parse.urlsplit(target).netloc
    host, port = state.routes.get(authority, (authority.rsplit(":", 1)[0], 0))
    try:
        up_reader, up_writer = await asyncio.open_connection(host, port)
    except OSError:
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        writer.close()
        return
    if method == "CONNECT":
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    else:
        parts = urllib.parse.urlsplit(target)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        kept = [f"{k}: {v}" for k, v in headers if k.lower() not in _HOP_BY_HOP]
        up_head = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close"])
        up_writer.write(up_head.encode("latin-1") + b"\r\n\r\n")
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


@contextlib.contextmanager
def forward_proxy(*, refuse: int | None = None) -> Iterator[RunningProxy]:
    """A forward proxy on a free port of 127.0.0.1, on its own event loop in a thread;
    `refuse`: the status it answers everything with."""
    state = ProxyState(refuse=refuse)

    async def start() -> tuple[RunningProxy, Stop]:
        server = await asyncio.start_server(
            lambda r, w: _handle(state, r, w), "127.0.0.1", 0, reuse_address=True
        )
        port = server.sockets[0].getsockname()[1]

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        return RunningProxy(f"http://127.0.0.1:{port}", state), stop

    with serve_on_thread(start, name="proxy") as proxy:
        yield proxy
