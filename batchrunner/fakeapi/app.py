"""The aiohttp application: the route table, and starting a server on a socket.

FakeApi (service.py) holds what every /v1 route shares and the small routes; Generation
(generation.py) the generation flow. `start_server` binds a loopback-friendly listener
with a large backlog, over TLS when given a certificate. No CLI concerns.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from batchrunner.fakeapi.generation import Generation
from batchrunner.fakeapi.service import FakeApi
from batchrunner.fakeapi.state import FakeState

if TYPE_CHECKING:
    from batchrunner.fakeapi.options import FakeOptions

STATE_KEY = web.AppKey("fakeapi_state", FakeState)
BACKLOG = 4096


def make_app(options: FakeOptions, state: FakeState | None = None) -> web.Application:
    """The aiohttp application serving both conventions under /v1."""
    state = state if state is not None else FakeState(log_limit=options.log_limit)
    api = FakeApi(options, state)
    generation = Generation(api)
    # aiohttp's own size check fires first for oversized bodies; read_json maps it to 413
    app = web.Application(client_max_size=options.max_body_bytes)
    app[STATE_KEY] = state
    app.on_response_prepare.append(api.on_prepare)
    app.router.add_post("/v1/messages", generation.messages)
    app.router.add_post("/v1/messages/count_tokens", api.count_tokens)
    app.router.add_post("/v1/chat/completions", generation.chat)
    app.router.add_get("/v1/models", api.list_models)
    app.router.add_get("/v1/models/{model_id:.+}", api.get_model)
    app.router.add_route("*", "/v1/{tail:.*}", api.not_found)
    app.router.add_get("/_fake/stats", api.fake_stats)
    app.router.add_get("/_fake/log", api.fake_log)
    app.router.add_post("/_fake/reset", api.fake_reset)
    return app


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started server: call `await runner.cleanup()` to stop it."""

    runner: web.AppRunner
    base_url: str
    state: FakeState


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def start_server(options: FakeOptions, *, state: FakeState | None = None) -> RunningServer:
    """Bind and start serving; the base URL carries the real port when `options.port` is 0."""
    state = state if state is not None else FakeState(log_limit=options.log_limit)
    runner = web.AppRunner(
        make_app(options, state),
        access_log=None,  # per-request logging costs more CPU than answering
        handler_cancellation=True,  # a client that hangs up cancels its (maybe hanging) handler
        shutdown_timeout=0.25,  # a fake owes in-flight requests no graceful drain
    )
    await runner.setup()
    try:
        tls = _tls_context(options)
        site = web.TCPSite(
            runner,
            options.host,
            options.port,
            backlog=BACKLOG,
            reuse_address=True,
            ssl_context=tls,
        )
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    scheme = "https" if tls is not None else "http"
    return RunningServer(runner, f"{scheme}://{_url_host(options.host)}:{port}/v1", state)


def _tls_context(options: FakeOptions) -> ssl.SSLContext | None:
    """HTTPS with the given certificate and key (SNI and ALPN as Python's defaults do)."""
    if options.tls_cert is None or options.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(options.tls_cert, options.tls_key)
    return context
