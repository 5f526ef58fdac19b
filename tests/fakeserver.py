"""Run the fake API for tests: in a subprocess (FakeServer) or in a thread (serve_in_thread).

FakeServer runs the real command (`python -m batchrunner.fakeapi --port 0 ...`) and talks
to `/_fake/*` with urllib only, so it adds no client library to what is under test.
serve_in_thread runs the same aiohttp app on its own event loop for fast in-process tests;
serve_on_thread is that loop-in-a-thread for any server (tests/hostile*.py use it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from batchrunner.fakeapi import FakeOptions, FakeState, RunningServer, start_server

if TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable, Iterator, Mapping
    from types import TracebackType

    Stop = Callable[[], Awaitable[None]]  # stops a server that serve_on_thread started

T = TypeVar("T")

_PREFIX = "listening on "


def _root(base_url: str) -> str:
    return base_url.removesuffix("/v1")


def _fetch(url: str, *, method: str = "GET", context: ssl.SSLContext | None = None) -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.loads(response.read())


class FakeServer:
    """`batchrunner.fakeapi` in a subprocess; `.base_url` ends in `/v1`.

    Without `env` the child inherits this environment minus CAICAINI_API_KEY, so only an
    explicit `api_key` makes the server strict about keys. `ssl_context` is what `/_fake/*`
    requests trust when the server speaks HTTPS (`--tls-cert`).
    """

    def __init__(
        self,
        *args: str,
        api_key: str | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 20.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.args = args
        self._context = ssl_context
        self._env = dict(os.environ if env is None else env)
        if env is None:
            self._env.pop("CAICAINI_API_KEY", None)
        if api_key is not None:
            self._env["CAICAINI_API_KEY"] = api_key
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in __exit__
        self.base_url = ""
        self.first_line = ""

    def __enter__(self) -> FakeServer:
        command = [sys.executable, "-m", "batchrunner.fakeapi", "--port", "0", *self.args]
        self._proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._stderr, env=self._env, text=True
        )
        try:
            self.first_line = self._read_first_line()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.base_url = self.first_line.removeprefix(_PREFIX)
        return self

    def _read_first_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            ready = selector.select(self._startup_timeout)
        line = self._proc.stdout.readline().rstrip("\n") if ready else ""
        if not line.startswith(_PREFIX):
            self._stderr.seek(0)
            raise RuntimeError(f"fake API did not start: {line!r} {self._stderr.read()!r}")
        return line

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self._stderr.close()

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has stopped."""
        return None if self._proc is None else self._proc.poll()

    def stats(self) -> dict[str, Any]:
        """`GET /_fake/stats`."""
        result: dict[str, Any] = _fetch(
            _root(self.base_url) + "/_fake/stats", context=self._context
        )
        return result

    def log(self) -> list[dict[str, Any]]:
        """`GET /_fake/log`."""
        result: list[dict[str, Any]] = _fetch(
            _root(self.base_url) + "/_fake/log", context=self._context
        )
        return result

    def reset(self) -> None:
        """`POST /_fake/reset`."""
        _fetch(_root(self.base_url) + "/_fake/reset", method="POST", context=self._context)


@dataclass(frozen=True, slots=True)
class ThreadServer:
    """A fake API served from a background thread; `state` is the live FakeState."""

    base_url: str
    state: FakeState
    options: FakeOptions

    @property
    def root(self) -> str:
        """The base URL without `/v1` (what the Anthropic SDK wants)."""
        return _root(self.base_url)


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the stopped server left running, so the loop closes without warnings."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


@contextlib.contextmanager
def serve_on_thread(start: Callable[[], Awaitable[tuple[T, Stop]]], *, name: str) -> Iterator[T]:
    """Run `start()` on a fresh event loop in a daemon thread; yield the handle it returns.

    `start` binds a server and returns (its handle, a coroutine function that stops it).
    When the block ends the loop stops, the server is stopped and leftover tasks are
    cancelled. A server that fails to start raises RuntimeError here, naming the cause.
    """
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                box["handle"], box["stop"] = loop.run_until_complete(start())
            except BaseException as exc:
                box["error"] = exc
                return
            finally:
                started.set()
            loop.run_forever()
            loop.run_until_complete(box["stop"]())
            _cancel_leftovers(loop)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    started.wait(20)
    if "handle" not in box:
        thread.join(20)
        raise RuntimeError(f"{name} did not start: {box.get('error')!r}")
    handle: T = box["handle"]
    try:
        yield handle
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(20)


@contextlib.contextmanager
def serve_in_thread(**options: Any) -> Iterator[ThreadServer]:
    """Serve FakeOptions(port=0, **options) on a thread with its own event loop."""
    fake_options = FakeOptions(**{"port": 0, **options})

    async def start() -> tuple[RunningServer, Stop]:
        server = await start_server(fake_options)
        return server, server.runner.cleanup

    with serve_on_thread(start, name="fakeapi") as server:
        yield ThreadServer(server.base_url, server.state, fake_options)
