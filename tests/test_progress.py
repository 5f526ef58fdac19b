"""The progress display says why a run waits or slowed down, and a log gets that at once."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from batchrunner.calllog import CallLog
from batchrunner.progress import PlainProgress, Progress, render
from batchrunner.records import Attempt

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_the_line_says_what_the_run_waits_for_or_why_it_stops() -> None:
    """`waiting` is shown while the run goes; `stopping` replaces it once it stops."""
    p = Progress(total=10, succeeded=2, started=time.monotonic())
    assert "waiting" not in render(p)
    p.waiting = "42 s for HTTP 429 retry-after: 1000000000 (capped at 60 s)"
    assert render(p).endswith(
        "| waiting 42 s for HTTP 429 retry-after: 1000000000 (capped at 60 s)"
    )
    p.stopping = "SIGTERM: finishing requests in flight"
    assert render(p).endswith("| stopping: SIGTERM: finishing requests in flight")


def test_plain_lines_come_every_10_s_and_at_once_when_waiting_begins(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without a terminal: one heartbeat line, then none until the run starts waiting."""
    printer = PlainProgress()
    p = Progress(total=10, started=time.monotonic())
    printer.update(p)
    printer.update(p)
    p.waiting = "60 s for the --rpm budget"
    printer.update(p)
    printer.update(p)  # still the same wait: no new line before the heartbeat is due
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert "waiting" not in lines[0] and lines[1].endswith("| waiting 60 s for the --rpm budget")


def test_a_slow_down_is_shown_with_the_limit_and_pace_and_logged_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The line says why the run slowed, its in-flight limit and pace; a log gets a line
    as soon as the reason changes, not at the next heartbeat."""
    printer = PlainProgress()
    p = Progress(total=10, started=time.monotonic(), limit=64)
    printer.update(p)
    p.slowed, p.pace = "HTTP 429: the last 8 answers refused: pace 92 req/s, pause 1 s", 93.8
    printer.update(p)
    printer.update(p)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "slowed" not in lines[0]
    assert (
        "slowed (in-flight limit 64, pace 93.8 req/s): "
        "HTTP 429: the last 8 answers refused: pace 92 req/s, pause 1 s"
    ) in lines[1]


def test_calls_log_names_the_attempt_that_slowed_the_run(tmp_path: Path) -> None:
    """An attempt whose answer slowed the run carries `slowed`; the others do not."""
    with CallLog(tmp_path / "calls.log") as log:
        for slowed in (None, "HTTP 529: the last 8 answers refused: pause 1 s"):
            log.write(
                Attempt(
                    row_id="r1",
                    attempt=1,
                    http_status=529,
                    request_id=None,
                    response_id=None,
                    latency_ms=1.0,
                    error_type="overloaded_error",
                    retry_after=1.0,
                    slowed=slowed,
                )
            )
    lines = [json.loads(line) for line in (tmp_path / "calls.log").read_text().splitlines()]
    assert "slowed" not in lines[0]
    assert lines[1]["slowed"] == "HTTP 529: the last 8 answers refused: pause 1 s"
