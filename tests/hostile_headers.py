"""A small hostile API on 127.0.0.1, served from a thread: every answer carries the headers
a test chooses (absurd rate limits, a Retry-After of 10^9 s), which the fake API cannot be
told to send. It speaks just enough of the messages convention for a run."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakeserver import serve_on_thread

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from tests.fakeserver import Stop

MESSAGE = {
    "id": "msg_hostile",
    "type": "message",
    "role": "assistant",
    "model": "caicaini/auto",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 1},
}
RATE_LIMITED = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}


@dataclass
class Hostile:
    """What the server answers; `seen` logs (monotonic time, method, path) per request."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    on_models: bool = True  # also send `headers` with GET /models (the preflight)
    first: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # answers before those
    base_url: str = ""
    seen: list[tuple[float, str, str]] = field(default_factory=list)

    def posts(self) -> int:
        return sum(1 for _, method, _ in self.seen if method == "POST")


def _app(spec: Hostile) -> web.Application:
    async def models(request: web.Request) -> web.Response:
        spec.seen.append((time.monotonic(), request.method, request.path))
        headers = dict(spec.headers) if spec.on_models else {}
        return web.json_response({"data": [{"id": "caicaini/auto"}]}, headers=headers)

    async def messages(request: web.Request) -> web.Response:
        await request.read()
        spec.seen.append((time.monotonic(), request.method, request.path))
        status, headers = spec.first.pop(0) if spec.first else (spec.status, dict(spec.headers))
        body: dict[str, Any] = MESSAGE if status == 200 else RATE_LIMITED
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/messages", messages)
    return app


@contextlib.contextmanager
def serve_hostile(spec: Hostile) -> Iterator[Hostile]:
    """Serve `spec` on a free loopback port until the block ends; sets `spec.base_url`."""

    async def start() -> tuple[Hostile, Stop]:
        runner = web.AppRunner(_app(spec), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        spec.base_url = f"http://127.0.0.1:{port}/v1"
        return spec, runner.cleanup

    with serve_on_thread(start, name="hostile-api") as served:
        yield served
