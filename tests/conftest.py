"""Shared fixtures: zeroed backoff, asyncio for async tests, the fake API in a subprocess.

Helpers that tests import live in tests/helpers.py, not here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from batchrunner import retrying
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def _zero_backoff() -> Iterator[None]:
    """Backoff waits are zeroed by policy in tests (Retry-After is still honoured)."""
    retrying.set_testing(True)
    yield
    retrying.set_testing(False)


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """API calls honour *_PROXY variables: tests start without any (children too), so a
    proxy set on the machine never carries a test's loopback traffic elsewhere."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio only (anyio would also try trio where it is installed)."""
    return "asyncio"


@pytest.fixture
def fake_api() -> Iterator[FakeServer]:
    """A plain fake API (no faults, no latency) on a free loopback port."""
    with FakeServer(api_key=TEST_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def _module_server() -> Iterator[FakeServer]:
    """One fake API subprocess for the module: starting one costs ~0.4 s."""
    with FakeServer(api_key=TEST_KEY) as server:
        yield server


@pytest.fixture
def shared_api(_module_server: FakeServer) -> FakeServer:
    """The plain fake API, started once for this module and reset before each test."""
    _module_server.reset()
    return _module_server
