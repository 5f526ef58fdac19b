"""End to end: sporadic 429/529s bind only their row; a real limit is learned, not hammered.

Small versions of the issue's acceptance runs (the full-size figures come from
`bench/pacing.py`): the real CLI in a child process against the fake API on loopback,
judged from the server's log (arrivals, answers, statuses, announced waits) and calls.log.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests import serverlog
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, start_run, write_jsonl

# Paced against a clock: with `--dist loadgroup` these run one at a time on one worker,
# never beside another such test (a starved fake API bunches arrivals into its window).
pytestmark = pytest.mark.xdist_group("timing")

if TYPE_CHECKING:
    from pathlib import Path


def _run(tmp_path: Path, server: FakeServer, rows: int, *extra: str) -> list[dict[str, Any]]:
    """Run `rows` rows to completion (exit 0); return calls.log's lines."""
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"q {i}"} for i in range(rows)]
    )
    out = tmp_path / "run"
    proc = start_run(src, out, server.base_url, *extra)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"{rows} rows: {rows} succeeded, 0 errored" in stdout
    return [json.loads(line) for line in (out / "calls.log").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["529", "429"])
def test_sporadic_refusals_bind_only_their_row(tmp_path: Path, kind: str) -> None:
    """10% of requests refused at random with Retry-After 0.5 s (16 slots, 0.2 s latency,
    240 rows): nothing slows the run (no calls.log line says so), the server holds the
    full 16 requests while rows are left to start and never more, and no refused row comes
    back before its Retry-After."""
    fake = ["--latency", "0.2", "--fault-rate", "0.1", "--faults", kind]
    with FakeServer(*fake, "--fault-retry-after", "0.5", api_key=TEST_KEY) as server:
        calls = _run(tmp_path, server, 240, "--concurrency", "16")
        log, stats = server.log(), server.stats()
    assert serverlog.refused(log) >= 10  # the faults did happen
    assert [c["slowed"] for c in calls if "slowed" in c] == []
    assert stats["max_in_flight"] == 16
    assert serverlog.in_flight_median(log) == 16
    assert serverlog.early_retries(log) == []


@pytest.mark.slow
@pytest.mark.parametrize("headers", ["gateway", "none"])
def test_a_sliding_window_is_learned_without_hammering(tmp_path: Path, headers: str) -> None:
    """Issue 11's scenario: 100 requests in any second, announced as 6000/min (or no
    rate-limit headers at all), 2 000 rows at --concurrency 256: at most 5% refused, at
    least 85% of the limit used (the issue asks 90%; `make bench` measures it, this margin
    is for a loaded machine), no retry sooner than its Retry-After, and calls.log says when
    and why the run slowed. A smaller run would not do: the first wave's overshoot (~15
    refusals) is a fixed cost, 2.5% of 600 rows."""
    fake = ["--rate-limit-mode", "sliding", "--rate-limit-rps", "100", "--latency", "0.02"]
    if headers == "none":
        fake.append("--no-rate-limit-headers")
    with FakeServer(*fake, api_key=TEST_KEY) as server:
        calls = _run(tmp_path, server, 2000, "--concurrency", "256")
        log = server.log()
    refused = serverlog.refused(log)
    assert refused <= 0.05 * len(log), (refused, len(log))
    assert serverlog.pace(log) >= 0.85 * 100, serverlog.pace(log)
    assert serverlog.early_retries(log) == []
    slowed = [c["slowed"] for c in calls if "slowed" in c]
    assert slowed and slowed[0].startswith("HTTP 429: "), slowed
    assert "pace" in slowed[0] and "pause 1 s" in slowed[0], slowed


@pytest.mark.slow
def test_a_fixed_window_with_a_limit_and_no_reset_is_obeyed(tmp_path: Path) -> None:
    """A LiteLLM-like window of 40 requests per 2 s (limit and remaining, no reset, its
    wait as `llm_provider-retry-after` only), 120 rows: at most 10% refused, and no retry
    sooner than the wait that spelling announced."""
    fake = ["--rate-limit-mode", "fixed", "--rate-limit-rpm", "40", "--rate-limit-window", "2"]
    with FakeServer(*fake, "--latency", "0.02", api_key=TEST_KEY) as server:
        _run(tmp_path, server, 120, "--concurrency", "32")
        log = server.log()
    assert serverlog.refused(log) <= 0.1 * len(log), (serverlog.refused(log), len(log))
    assert serverlog.early_retries(log) == []


def test_a_limit_pauses_every_worker_for_its_retry_after(tmp_path: Path) -> None:
    """When the run slows down for a limit with a pause, only attempts already sent
    reach the server within that pause (the in-flight cap: at most 15 others)."""
    fake = ["--rate-limit-mode", "sliding", "--rate-limit-rps", "20"]
    with FakeServer(*fake, api_key=TEST_KEY) as server:
        calls = _run(tmp_path, server, 60, "--concurrency", "16")
        arrivals = sorted(float(e["t"]) for e in server.log())
    # `ts` is written right after the pacer took the answer (no await between): any
    # attempt admitted later waits out the pause, so what arrives sooner was already sent.
    paused = [float(c["ts"]) for c in calls if "pause 1 s" in c.get("slowed", "")]
    assert paused, [c.get("slowed") for c in calls]
    for ts in paused:
        inside = [t for t in arrivals if ts + 0.002 < t < ts + 1.0 - 0.05]
        assert len(inside) <= 15, (ts, len(inside))
