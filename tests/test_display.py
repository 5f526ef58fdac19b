"""The live display fits the terminal: driven through a real pseudo-terminal, read back
through a terminal emulator (pyte), every refresh stays one screen line per item.

Also the pure parts: lines cut to any width (wide characters included), the counters
that feed the display, and the rates and ETA over the last seconds.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from typing import TYPE_CHECKING

import pyte
import pytest

from batchrunner.display import LiveDisplay, display_lines, open_display
from batchrunner.progress import PlainProgress, Progress, Rates
from batchrunner.records import Attempt, Result
from batchrunner.spec import PricingSpec
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

# Cursor moves, erases and mode switches end a piece of text on the screen; so do CR, LF.
_BREAKS = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n")
_ROWS = 40


def _drive(cmd: list[str], *, columns: int, env: dict[str, str]) -> tuple[int, bytes, str]:
    """Run `cmd` with a pty `columns` wide as its stderr; (exit code, pty bytes, stdout)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    data = bytearray()
    with subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env
    ) as proc:
        os.close(slave)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.2)
                if not ready:
                    if proc.poll() is not None:
                        break
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    break
                if not chunk:
                    break
                data += chunk
            assert proc.stdout is not None
            stdout = proc.stdout.read().decode()
            code = proc.wait(timeout=30)
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
    return code, bytes(data), stdout


@pytest.mark.parametrize(("columns", "verbose"), [(80, False), (44, False), (80, True)])
def test_the_live_display_fits_a_narrow_terminal_and_redraws_in_place(
    tmp_path: Path, columns: int, verbose: bool
) -> None:
    """Through a pty `columns` wide: no piece of text wider than the terminal, never more
    than one `rows` line on the emulated screen (no stale copies), rows and errors shown,
    the block cleared at the end and the summary on stdout. With -v every attempt's line
    prints above the block, and the block still redraws in place."""
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(_ROWS)]
    )
    out = tmp_path / "run"
    faults = ("--latency", "0.2", "--fault-rate", "0.4", "--faults", "500")
    with FakeServer(*faults) as server:
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env.update(CAICAINI_API_KEY=TEST_KEY, TERM="xterm-256color")
        cmd = [sys.executable, "-m", "batchrunner", "run", str(src), "-o", str(out)]
        cmd += ["--base-url", server.base_url, "--concurrency", "2", "--max-attempts", "1"]
        cmd += ["-v"] if verbose else []
        code, raw, stdout = _drive(cmd, columns=columns, env=env)
    assert code == 1, stdout  # the 500s errored their rows
    text = raw.decode("utf-8")
    pieces = [piece for piece in _BREAKS.split(text) if piece]
    assert pieces and max(len(piece) for piece in pieces) < columns, max(pieces, key=len)

    screen = pyte.Screen(columns, 24)
    stream = pyte.ByteStream(screen)
    seen: list[list[str]] = []  # the screen after each complete refresh
    # Each redraw starts by erasing the line it is on; feed one refresh at a time, each in
    # odd pieces as a terminal would get them, and check the screen at every piece.
    for n, refresh in enumerate(raw.split(b"\r\x1b[2K")):
        for start in range(0, len(refresh) + 1, 97):
            stream.feed((b"\r\x1b[2K" if n and not start else b"") + refresh[start : start + 97])
            rows_lines = [line for line in screen.display if line.startswith("rows ")]
            assert len(rows_lines) <= 1, screen.display  # a second copy is a stale redraw
        seen.append(list(screen.display))
    seen_rows = {line for shown in seen for line in shown if line.startswith("rows ")}
    seen_errors = {line for shown in seen for line in shown if line.startswith("errors ")}
    refreshes = text.count("\x1b[1A") // 4
    assert refreshes >= 2, text  # it redrew in place, more than once
    assert any(f"/{_ROWS}" in line for line in seen_rows), seen_rows
    assert any("api_error" in line for line in seen_errors), seen_errors
    assert not any(line.startswith("rows ") for line in screen.display)  # cleared at the end
    if verbose:  # calls.log lines, wrapped short of the edge, then the block below them
        assert sum('"row_id":' in line for line in screen.display) >= 5, screen.display
        assert any(line.startswith("rows ") for line in seen[len(seen) // 2])
    assert stdout.startswith(f"{_ROWS} rows: ") and "exit 1: " in stdout


def test_lines_are_cut_to_any_width_wide_characters_and_all() -> None:
    """Whatever the width and however long an item, a line never exceeds the width."""
    p = Progress(total=10**9, done_before=123_456_789, started=time.monotonic() - 5)
    p.errors = {"overloaded_error": 10**6, "超時エラー" * 10: 3, "x" * 300: 1}
    p.waiting = "42 s for HTTP 429 retry-after: 1000000000 (capped at 60 s)"
    pricing = PricingSpec(input_per_mtok=3.0, output_per_mtok=15.0)
    for width in (1, 2, 10, 39, 80, 81, 200):
        for line in display_lines(p, (1e6, 1e9, 1e9, 1e5), pricing, width=width):
            assert len(line) <= width, (width, line)


def test_the_counters_count_attempts_and_outcomes() -> None:
    """Retries, 429s and 529s per attempt; tokens and error types per outcome."""
    p = Progress(total=3)

    def attempt(n: int, status: int | None) -> Attempt:
        return Attempt(
            row_id="a",
            attempt=n,
            http_status=status,
            request_id=None,
            response_id=None,
            latency_ms=1.0,
            error_type=None,
            retry_after=None,
        )

    for n, status in ((1, 429), (2, 529), (3, 200), (1, None)):
        p.attempted(attempt(n, status))
    p.recorded(Result(index=0, id="a", status="succeeded", input_tokens=5, output_tokens=7))
    p.recorded(Result(index=1, id="b", status="errored", error_type="timeout"))
    p.recorded(Result(index=2, id="c", status="errored", error_type="timeout"))
    assert (p.attempts, p.retries, p.http_429, p.http_529) == (4, 2, 1, 1)
    assert (p.succeeded, p.errored, p.input_tokens, p.output_tokens) == (1, 2, 5, 7)
    assert p.errors == {"timeout": 2}
    assert p.cost_usd(PricingSpec(input_per_mtok=1e6, output_per_mtok=0)) == 5.0
    assert p.cost_usd(None) is None


def test_rates_follow_the_last_ten_seconds() -> None:
    """A burst long ago does not hold the rate up: requests/s over the last 10 s only."""
    p = Progress(total=1000, started=0.0)
    rates = Rates()
    p.attempts = 500
    assert rates.add(p, 1.0)[0] == 500.0  # the first second: 500 req/s
    for t in range(2, 30):
        p.attempts += 1
        req_s, _, _, _ = rates.add(p, float(t))
    assert req_s == pytest.approx(1.0, abs=0.15)


def test_the_display_is_chosen_by_flags_and_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """-q: none; --no-progress, no terminal or a dumb one: plain lines; else live."""
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    monkeypatch.setenv("TERM", "xterm")
    assert open_display(quiet=True, no_progress=False, pricing=None) is None
    assert isinstance(open_display(quiet=False, no_progress=True, pricing=None), PlainProgress)
    assert isinstance(open_display(quiet=False, no_progress=False, pricing=None), LiveDisplay)
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(open_display(quiet=False, no_progress=False, pricing=None), PlainProgress)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert isinstance(open_display(quiet=False, no_progress=False, pricing=None), PlainProgress)
