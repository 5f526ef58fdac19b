"""Ctrl-C and SIGTERM on a real subprocess: grace for requests in flight, then 130 / 143."""

from __future__ import annotations

import json
import signal
import time
from typing import TYPE_CHECKING

import pytest

from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, start_run, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.crash


def _wait_in_flight(server: FakeServer, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.stats()["in_flight"] >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"never saw {n} requests in flight")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_lets_requests_in_flight_finish_and_records_them(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """The answers of requests in flight at the signal are recorded; nothing new is sent."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(64)])
    out = tmp_path / "run"
    with FakeServer("--latency", "1.0", api_key=TEST_KEY) as server:
        proc = start_run(src, out, server.base_url, "--concurrency", "8")
        _wait_in_flight(server, 8)
        proc.send_signal(signum)
        said, err = proc.communicate(timeout=30)
        sent = len(server.log())
    code = 143 if signum == signal.SIGTERM else 130
    assert proc.returncode == code, err
    assert "run the same command again" in err
    # The summary (stdout) says what the code means, and how many rows are left.
    assert f"exit {code}: interrupted by {signum.name}: what was received is recorded" in said
    assert "Traceback" not in err
    status = json.loads(run_cli(["status", str(out), "--json"]).stdout)
    # Every request the server answered was recorded: the grace period waited for them.
    assert status["succeeded"] == sent
    assert 8 <= sent < 64


def test_second_ctrl_c_skips_the_grace_period(tmp_path: Path) -> None:
    """A second SIGINT stops at once instead of waiting for slow answers."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(8)])
    out = tmp_path / "run"
    with FakeServer("--latency", "30", api_key=TEST_KEY) as server:
        proc = start_run(src, out, server.base_url, "--concurrency", "4")
        _wait_in_flight(server, 4)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert proc.poll() is None, "the first Ctrl-C must wait for requests in flight"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        elapsed = time.monotonic() - started
    assert proc.returncode == 130, err
    assert elapsed < 15, "the second Ctrl-C should not wait out the 30 s answers"
    status = json.loads(run_cli(["status", str(out), "--json"]).stdout)
    assert (status["succeeded"], status["pending"]) == (0, 8)
