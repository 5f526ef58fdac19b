"""The progress display says why a run is waiting, and a log gets that line at once."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from batchrunner.progress import PlainProgress, Progress, render

if TYPE_CHECKING:
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
