"""No silent unbounded waits: hostile rate-limit headers and Retry-Afters, end to end.

A small server in the test (tests/hostile_headers.py) answers with headers the fake API cannot be
told to send. The run is a real subprocess with a deadline, so a run that waits forever
fails the test instead of hanging it. `[limits] max_wait` makes the cap small, so the
stops the cap decides happen in about a second instead of a minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from batchrunner.config import load_job
from batchrunner.errors import ConfigError
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, status_json, write_jsonl
from tests.hostile_headers import Hostile, serve_hostile

if TYPE_CHECKING:
    from pathlib import Path

SPENT_FOR_1000H = {
    "x-ratelimit-limit-requests": "1",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1000h",
}
RETRY_IN_A_BILLION_S = {"retry-after": "1000000000"}
ROWS = 20
NO_FLAGS: dict[str, Any] = {"input_path": None, "output": None, "overrides": {}}


def _job(tmp_path: Path, **limits: float) -> Path:
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": f"p{i}"} for i in range(ROWS)])
    lines = "".join(f"{key} = {value}\n" for key, value in {"concurrency": 4, **limits}.items())
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\ninput = "in.jsonl"\noutput = "run"\n\n[limits]\n{lines}')
    return job


def _start(job: Path, base_url: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "batchrunner", "run", "--job", str(job)]
    return subprocess.Popen(
        [*cmd, "--base-url", base_url, "--no-progress"],  # the waits are progress lines
        env={**os.environ, "CAICAINI_API_KEY": TEST_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, float]:
    started = time.monotonic()
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err, time.monotonic() - started


def test_a_budget_spent_for_1000h_stops_the_run_within_the_cap(tmp_path: Path) -> None:
    """limit 1, remaining 0, reset 1000h on every answer: exit 3 after one capped wait,
    naming the headers; what was answered is recorded, the rest pending."""
    job = _job(tmp_path, max_wait=1)
    with serve_hostile(Hostile(headers=SPENT_FOR_1000H)) as server:
        code, err, elapsed = _finish(_start(job, server.base_url), timeout=90)
        posts = server.posts()
    assert code == 3, err
    assert "x-ratelimit-reset-requests: 1000h" in err and "1 s cap" in err, err
    assert "Traceback" not in err
    assert elapsed < 30, elapsed  # without the cap: a minute per row (the floor rate)
    st = status_json(tmp_path / "run")
    assert (st["succeeded"], st["errored"]) == (posts, 0)
    assert st["pending"] == ROWS - posts >= ROWS - 4
    assert not (tmp_path / "run" / "results.parquet").exists()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_a_pacer_wait_exits_at_once(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    """With the default 60 s cap the run waits on the spent budget; SIGTERM / SIGINT then
    exit within 5 s (no grace: nothing is in flight) and leave every row pending."""
    job = _job(tmp_path)
    with serve_hostile(Hostile(headers=SPENT_FOR_1000H)) as server:
        with _start(job, server.base_url) as proc:
            waiting = threading.Event()

            def watch(stream: Any = proc.stderr) -> None:
                for line in stream:
                    if "waiting" in line:
                        waiting.set()

            reader = threading.Thread(target=watch, daemon=True)
            reader.start()
            assert waiting.wait(30), "the run never said it was waiting"
            started = time.monotonic()
            proc.send_signal(signum)
            proc.wait(timeout=30)
            elapsed = time.monotonic() - started
            reader.join(5)
        posts = server.posts()
    assert proc.returncode == code
    assert elapsed < 5, elapsed
    assert posts == 0
    assert status_json(tmp_path / "run")["pending"] == ROWS


def test_a_retry_after_of_a_billion_seconds_stops_the_run_with_rows_pending(
    tmp_path: Path,
) -> None:
    """429 with Retry-After 10^9 on every request: exit 3 after one capped pause, naming
    the header; no row recorded as errored (they are pending, for a later resume)."""
    job = _job(tmp_path, max_wait=1)
    with serve_hostile(Hostile(status=429, headers=RETRY_IN_A_BILLION_S)) as server:
        code, err, elapsed = _finish(_start(job, server.base_url), timeout=120)
        posts = server.posts()
    assert code == 3, err
    assert "retry-after: 1000000000" in err and "31.7 years" in err, err
    assert elapsed < 60, elapsed
    assert posts <= 2 * 4, posts  # two waves at the most
    st = status_json(tmp_path / "run")
    assert (st["succeeded"], st["errored"], st["pending"]) == (0, 0, ROWS)


def test_one_over_cap_ask_binds_its_row_for_the_cap_and_the_run_completes(
    tmp_path: Path,
) -> None:
    """A single 429 asking for 10^9 s is obeyed by its row up to the cap (1 s); the other
    rows do not wait for it, and the retry succeeds."""
    job = _job(tmp_path, max_wait=1)
    hostile = Hostile(first=[(429, dict(RETRY_IN_A_BILLION_S))])
    with serve_hostile(hostile) as server:
        code, err, _ = _finish(_start(job, server.base_url), timeout=90)
        seen = [t for t, method, _ in server.seen if method == "POST"]
    assert code == 0, err
    assert len(seen) == ROWS + 1
    later = [round(t - seen[0], 3) for t in seen[1:]]
    assert any(t < 0.5 for t in later), later  # the others went on
    assert max(later) >= 0.9, later  # the refused row came back after the (capped) wait
    assert status_json(tmp_path / "run")["succeeded"] == ROWS


def test_sigterm_during_retry_backoffs_exits_at_once(tmp_path: Path) -> None:
    """Every row waits out a 503's Retry-After of 30 s: those rows are not in flight, so
    SIGTERM exits 143 at once instead of after the 30 s grace period."""
    job = _job(tmp_path)
    fake = ["--faults", "503", "--fault-rate", "1.0", "--fault-retry-after", "30"]
    with FakeServer(*fake, api_key=TEST_KEY) as server:
        with _start(job, server.base_url) as proc:
            deadline = time.monotonic() + 30
            while len(server.log()) < 8 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(server.log()) >= 8, "the first attempts never arrived"
            time.sleep(0.2)  # their 503s reach the workers, which start their backoffs
            proc.send_signal(signal.SIGTERM)
            code, err, elapsed = _finish(proc, timeout=60)
        attempts = len(server.log())
    assert code == 143, err
    assert elapsed < 5, elapsed
    # Waiting rows leave their slot to others: 4 on the wire, 4 more sent while the first
    # ones wait (twice --concurrency rows in progress at most); no retry went out.
    assert attempts == 8
    st = status_json(tmp_path / "run")
    assert (st["pending"], st["errored"]) == (ROWS, 0)


def test_max_wait_is_a_limit_of_the_job_file(tmp_path: Path) -> None:
    """[limits] max_wait sets the wait cap (60 s by default); it must be a positive number."""
    default = load_job(None, input_path=tmp_path / "in.jsonl", output=tmp_path, overrides={})
    assert default.limits.max_wait_s == 60.0
    assert load_job(_job(tmp_path, max_wait=5), **NO_FLAGS).limits.max_wait_s == 5.0
    with pytest.raises(ConfigError, match="max_wait must be a number of seconds > 0"):
        load_job(_job(tmp_path, max_wait=0), **NO_FLAGS)
