"""Shared fixtures: the fake API in a subprocess, input files, and the CLI in-process."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result

from batchrunner import retrying
from batchrunner.cli import main
from tests.fakeserver import FakeServer

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

TEST_KEY = "sk-test-0123456789-SECRET"


@pytest.fixture(autouse=True)
def _zero_backoff() -> Iterator[None]:
    """Backoff waits are zeroed by policy in tests (Retry-After is still honoured)."""
    retrying.set_testing(True)
    yield
    retrying.set_testing(False)


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


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(
    args: Sequence[str], *, key: str | None = TEST_KEY, env: dict[str, str] | None = None
) -> Result:
    """Invoke `batchrunner ARGS` in-process with stdout and stderr kept apart."""
    full_env = {"CAICAINI_API_KEY": key or "", "CAICAINI_BASE": "http://127.0.0.1:9/v1"}
    full_env.update(env or {})
    return CliRunner().invoke(main, list(args), env=full_env, catch_exceptions=False)
