"""Fixtures of the fake API's own tests: one in-process server per module, and a client."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from tests.fakeserver import serve_in_thread

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fakeserver import ThreadServer


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadServer]:
    """The fake API with default options, served on a thread for the whole module."""
    with serve_in_thread() as running:
        yield running


@pytest.fixture
def client(server: ThreadServer) -> Iterator[httpx.Client]:
    """An httpx client whose base URL is the module server's `/v1`."""
    with httpx.Client(base_url=server.base_url) as http:
        yield http
